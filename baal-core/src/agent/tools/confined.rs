//! Opening and creating files inside the workspace with the kernel enforcing the confinement.
//!
//! The resolver decides on paths, but tool processes can write the workspace: between the check
//! and the open they could swap a directory for a symlink to `/etc`. So every open goes through
//! `openat2` from a descriptor of the workspace root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
//! (the resolved path has no symlink left in it, so one met now was planted), directories are
//! created with `mkdirat` from descriptors, and ownership is changed through descriptors. On
//! kernels older than 5.6 (no `openat2`) only the last component is protected (`O_NOFOLLOW`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Directory levels [`chown_tree`] descends; deeper trees are left as they are rather than
/// holding a descriptor per level without bound.
const MAX_CHOWN_DEPTH: usize = 64;

/// Opens a directory that must not be a symlink (the canonical workspace root).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens `rel` below `dir`, refusing any symlink on the way and any escape from `dir`.
pub(crate) fn open_beneath(dir: &OwnedFd, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::ResolveFlags;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::NOSYS) => {}
            Err(Errno::LOOP | Errno::XDEV) => {
                return Err(io::Error::other(
                    "a symlink appeared in the path while it was being opened; nothing was done",
                ));
            }
            other => return Ok(other?),
        }
    }
    Ok(rustix::fs::openat(dir, rel, flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, mode)?)
}

/// Opens directory `rel_dir` below `root`, creating what is missing; `on_create` sees each new
/// directory (to hand it to the tools user).
pub(crate) fn ensure_dirs(root: &OwnedFd, rel_dir: &Path, on_create: &dyn Fn(&OwnedFd)) -> io::Result<OwnedFd> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut current = open_beneath(root, Path::new("."), dir_flags, Mode::empty())?;
    for component in rel_dir.components() {
        let Component::Normal(name) = component else { continue };
        let name = Path::new(name);
        current = match open_beneath(&current, name, dir_flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let fd = open_beneath(&current, name, dir_flags, Mode::empty())?;
                on_create(&fd);
                fd
            }
            Err(e) => return Err(e),
        };
    }
    Ok(current)
}

/// Gives `dir` and everything below it to `uid`/`gid`, through descriptors only, never following
/// a symlink, so a tree being rearranged under it cannot redirect the change elsewhere.
pub(crate) fn chown_tree(dir: &OwnedFd, uid: u32, gid: u32, depth: usize) -> io::Result<()> {
    let (owner, group) = (Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)));
    rustix::fs::fchown(dir, owner, group)?;
    if depth >= MAX_CHOWN_DEPTH {
        return Ok(());
    }
    let mut entries = Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            kind = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                Err(_) => continue,
            };
        }
        if kind == FileType::Directory {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            // A directory swapped for something else since the listing is skipped.
            if let Ok(sub) = rustix::fs::openat(dir, name, flags, Mode::empty()) {
                chown_tree(&sub, uid, gid, depth + 1)?;
            }
        } else {
            match rustix::fs::chownat(dir, name, owner, group, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::agent::tools::workspace::Workspace;

    #[test]
    fn a_symlink_planted_after_the_check_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(ws.join("sub/file.txt"), "inside").unwrap();
        std::fs::write(outside.join("file.txt"), "outside").unwrap();
        let workspace = Workspace::new(&ws);
        let resolved = workspace.resolve_existing("sub/file.txt").unwrap();

        // A tool process swaps the directory for a symlink between the check and the open.
        std::fs::rename(ws.join("sub"), ws.join("moved")).unwrap();
        symlink(&outside, ws.join("sub")).unwrap();

        let err = workspace.open_resolved(&resolved, OFlags::RDONLY, Mode::empty()).unwrap_err();
        assert!(err.to_string().contains("symlink appeared"), "{err}");
        let (root, rel) = workspace.split_resolved(&resolved).unwrap();
        assert!(ensure_dirs(&root, rel.parent().unwrap(), &|_| {}).is_err());
        assert!(
            open_beneath(&root, &rel, OFlags::WRONLY | OFlags::TRUNC, Mode::empty()).is_err(),
            "opened through the planted symlink"
        );
        assert_eq!(std::fs::read_to_string(outside.join("file.txt")).unwrap(), "outside");
    }

    #[test]
    fn ensure_dirs_creates_missing_levels() {
        let dir = tempfile::tempdir().unwrap();
        let root = open_dir(dir.path()).unwrap();
        let created = std::cell::Cell::new(0);
        ensure_dirs(&root, Path::new("a/b/c"), &|_| created.set(created.get() + 1)).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        assert_eq!(created.get(), 3);
        ensure_dirs(&root, Path::new("a/b"), &|_| created.set(created.get() + 1)).unwrap();
        assert_eq!(created.get(), 3);
    }
}
