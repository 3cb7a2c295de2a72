//! The workspace path resolver: the single gate every file tool and the server's `/files` route
//! pass through.
//!
//! A path the model (or an HTTP client) names is resolved the way the kernel would resolve it:
//! `..` and symlinks are followed, also for paths that do not exist yet (the deepest existing
//! ancestor is resolved and the rest appended), and the result must be the workspace or inside it.
//! Names that hold the agent's own state or secrets are refused even inside the workspace.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::confined;

/// File names no tool may touch, wherever they are: the agent's settings and its database.
pub const DEFAULT_SENSITIVE_NAMES: &[&str] = &[".env", "agent.db", "agent.db-wal", "agent.db-shm", "agent.env"];

/// Symlink hops followed before giving up, as the kernel's own limit (`ELOOP`).
const MAX_SYMLINK_HOPS: usize = 40;

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path resolves outside the workspace (through `..`, an absolute path or a symlink).
    #[error("path escapes workspace: {path} (only paths inside the workspace can be used)")]
    Escapes {
        /// The path as given.
        path: String,
    },
    /// The path must exist and does not.
    #[error("file does not exist: {path}")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The path names a file that holds the agent's settings or state.
    #[error("access to a sensitive file is blocked: {name}")]
    Sensitive {
        /// The refused file name.
        name: String,
    },
    /// The file system could not be read while resolving.
    #[error("cannot resolve {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A workspace root and the names refused inside it.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    sensitive_names: Vec<String>,
}

impl Workspace {
    /// A workspace rooted at `root`, refusing [`DEFAULT_SENSITIVE_NAMES`]. The root need not exist
    /// yet: it is resolved on every call, so a workspace created later works.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace {
            root: root.into(),
            sensitive_names: DEFAULT_SENSITIVE_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Replaces the refused file names (for example to add the agent's settings file name).
    pub fn with_sensitive_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.sensitive_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The workspace root as configured.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The workspace root with symlinks resolved.
    pub fn canonical_root(&self) -> Result<PathBuf, PathError> {
        std::fs::canonicalize(&self.root)
            .map_err(|source| PathError::Io { path: self.root.display().to_string(), source })
    }

    /// Resolves `path` (relative to the workspace, or absolute) to an absolute path inside the
    /// workspace with every symlink and `..` resolved. The path need not exist; see
    /// [`Workspace::resolve_existing`].
    pub fn resolve(&self, path: &str) -> Result<PathBuf, PathError> {
        let root = self.canonical_root()?;
        let requested = if path.is_empty() { Path::new(".") } else { Path::new(path) };
        self.check_sensitive(requested)?;
        let resolved = resolve_beneath(&root.join(requested), 0)
            .map_err(|source| PathError::Io { path: path.to_string(), source })?
            .ok_or_else(|| PathError::Escapes { path: path.to_string() })?;
        if !resolved.starts_with(&root) {
            return Err(PathError::Escapes { path: path.to_string() });
        }
        // A symlink named innocently may point at a sensitive file.
        self.check_sensitive(&resolved)?;
        Ok(resolved)
    }

    /// Like [`Workspace::resolve`], and the path must exist.
    pub fn resolve_existing(&self, path: &str) -> Result<PathBuf, PathError> {
        let resolved = self.resolve(path)?;
        match std::fs::symlink_metadata(&resolved) {
            Ok(_) => Ok(resolved),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PathError::NotFound { path: path.to_string() }),
            Err(source) => Err(PathError::Io { path: path.to_string(), source }),
        }
    }

    /// Opens an existing file for reading: [`Workspace::resolve_existing`], then an open in which
    /// the kernel refuses any symlink or escape (so a path swapped after the check fails instead
    /// of leaving the workspace). What the server's `/files` route serves from; check
    /// `metadata().is_file()` on the result, since a directory opens too.
    pub fn open_existing(&self, path: &str) -> Result<std::fs::File, PathError> {
        let resolved = self.resolve_existing(path)?;
        self.open_resolved(&resolved, OFlags::RDONLY, Mode::empty())
            .map(std::fs::File::from)
            .map_err(|source| PathError::Io { path: path.to_string(), source })
    }

    /// A descriptor of the workspace root and `resolved` relative to it, for confined opens.
    pub(crate) fn split_resolved(&self, resolved: &Path) -> io::Result<(OwnedFd, PathBuf)> {
        let root = std::fs::canonicalize(&self.root)?;
        let rel = resolved
            .strip_prefix(&root)
            .map_err(|_| io::Error::other("the path is outside the workspace"))?
            .to_path_buf();
        Ok((confined::open_dir(&root)?, rel))
    }

    /// Opens `resolved` (from [`Workspace::resolve`]) below the root, confined by the kernel.
    pub(crate) fn open_resolved(&self, resolved: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let (root, rel) = self.split_resolved(resolved)?;
        confined::open_beneath(&root, &rel, flags, mode)
    }

    /// `resolved` (an output of [`Workspace::resolve`]) relative to the workspace, `.` for the
    /// root itself; what tools show the model and what `send_file` hands the server.
    pub fn relative(&self, resolved: &Path) -> String {
        let Ok(root) = self.canonical_root() else { return resolved.display().to_string() };
        match resolved.strip_prefix(&root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => resolved.display().to_string(),
        }
    }

    fn check_sensitive(&self, path: &Path) -> Result<(), PathError> {
        if let Some(name) = path.file_name().and_then(OsStr::to_str)
            && self.sensitive_names.iter().any(|s| s == name)
        {
            return Err(PathError::Sensitive { name: name.to_string() });
        }
        Ok(())
    }
}

/// Resolves an absolute `path` as the kernel would: the deepest existing ancestor through the
/// file system (so symlinks and `..` behave as they will when the file is opened), and the
/// components below it, which do not exist and so cannot be symlinks, lexically. A dangling
/// symlink is followed to its target, so writing through it cannot land outside. The result has
/// no symlink and no `..` in it. `None` when `..` climbs above `/`.
fn resolve_beneath(path: &Path, hops: usize) -> io::Result<Option<PathBuf>> {
    if hops > MAX_SYMLINK_HOPS {
        return Err(io::Error::other("too many levels of symbolic links"));
    }
    let components: Vec<Component> = path.components().collect();
    let mut split = components.len();
    let base = loop {
        let prefix: PathBuf = components[..split].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(real) => break real,
            Err(e) if e.kind() == io::ErrorKind::NotFound && split > 0 => {
                if matches!(components[split - 1], Component::Normal(_))
                    && std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink())
                {
                    // A dangling symlink: continue from where it points.
                    let target = std::fs::read_link(&prefix)?;
                    let mut followed = prefix.parent().unwrap_or(Path::new("/")).join(target);
                    followed.extend(&components[split..]);
                    return resolve_beneath(&followed, hops + 1);
                }
                split -= 1;
            }
            Err(e) => return Err(e),
        }
    };
    let rest = &components[split..];
    let mut resolved = base;
    for component in rest {
        match component {
            Component::Normal(name) => resolved.push(name),
            Component::ParentDir => {
                if !resolved.pop() {
                    return Ok(None);
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    if rest.iter().any(|c| matches!(c, Component::ParentDir)) {
        // `missing/../link` climbs back into existing ground, where `link` may be a symlink:
        // resolve again, now without the `..`.
        return resolve_beneath(&resolved, hops + 1);
    }
    Ok(Some(resolved))
}
