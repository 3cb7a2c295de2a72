//! Bringing another platform's data into the [`Store`](crate::store::Store) (feature `import`).
//!
//! - [`python`]: the Python Baal's `baal.db` and `pool.db`, its Fernet tokens opened and sealed
//!   again under this platform's key (`baal-cli import python`).

pub mod python;
