//! Test doubles on loopback, for this crate's tests and for embedders: a scripted
//! OpenAI-compatible server, fakes of the Aleph API and CRN, a loopback SSH "VM" (with, in
//! `python_vm`, a Python Baal VM to convert), an in-memory `Messenger`, and the Python Baal's
//! databases (`python_baal`, feature `import`).
//! Every double is a real server or a real implementation of a trait; none skips the code under
//! test.

#[cfg(feature = "aleph")]
pub mod aleph;
pub mod db;
#[cfg(any(feature = "agent", feature = "local"))]
pub mod internet;
#[cfg(feature = "platform")]
pub mod messenger;
pub mod openai;
#[cfg(feature = "import")]
pub mod python_baal;
#[cfg(feature = "aleph")]
pub mod python_vm;
#[cfg(feature = "aleph")]
pub mod ssh;
