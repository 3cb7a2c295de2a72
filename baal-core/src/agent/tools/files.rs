//! The file tools: `read_file`, `write_file`, `edit_file`, `list_dir` and `send_file`. Every path
//! goes through the workspace resolver, then every open through the kernel-confined opener
//! (`confined`); the work itself runs on the blocking pool.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use serde_json::{Map, Value, json};

use super::{
    MAX_SEND_FILE_BYTES, SentFile, Shared, Tool, ToolContext, ToolOutput, confined, error_output, object_args,
    optional_str, optional_u64, required_str,
};

type Args = Map<String, Value>;

/// Runs a synchronous tool body on the blocking pool, turning argument errors into tool errors.
async fn run_blocking(
    shared: &Arc<Shared>,
    args: Value,
    body: fn(&Shared, &Args) -> Result<ToolOutput, String>,
) -> ToolOutput {
    let args = match object_args(args) {
        Ok(a) => a,
        Err(e) => return error_output(e),
    };
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || body(&shared, &args)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => error_output(e),
        Err(e) => error_output(format!("the tool stopped unexpectedly: {e}")),
    }
}

macro_rules! file_tool {
    ($ty:ident, $name:literal, $description:literal, $schema:expr, $body:path) => {
        pub(crate) struct $ty {
            shared: Arc<Shared>,
        }

        impl $ty {
            pub(crate) fn new(shared: Arc<Shared>) -> Self {
                $ty { shared }
            }
        }

        #[async_trait]
        impl Tool for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn description(&self) -> &'static str {
                $description
            }
            fn parameters(&self) -> Value {
                $schema
            }
            async fn call(&self, args: Value, _ctx: &ToolContext) -> ToolOutput {
                run_blocking(&self.shared, args, $body).await
            }
        }
    };
}

file_tool!(
    ReadFile,
    "read_file",
    "Read a text file in the workspace. Lines come numbered; use offset and limit to read part of a long file.",
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the workspace"},
            "offset": {"type": "integer", "description": "First line to read, 1-based (default 1)"},
            "limit": {"type": "integer", "description": "How many lines to read (default: to the end)"}
        },
        "required": ["path"]
    }),
    read_file
);

file_tool!(
    WriteFile,
    "write_file",
    "Write a file in the workspace, creating parent directories. Overwrites an existing file.",
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the workspace"},
            "content": {"type": "string", "description": "The whole new content of the file"}
        },
        "required": ["path", "content"]
    }),
    write_file
);

file_tool!(
    EditFile,
    "edit_file",
    "Replace one exact piece of text in a workspace file. old_string must occur exactly once; include surrounding lines to make it unique.",
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the workspace"},
            "old_string": {"type": "string", "description": "The exact text to replace (must occur once)"},
            "new_string": {"type": "string", "description": "The replacement text"}
        },
        "required": ["path", "old_string", "new_string"]
    }),
    edit_file
);

file_tool!(
    ListDir,
    "list_dir",
    "List a directory in the workspace: directories first, then files.",
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Directory path, relative to the workspace (default \".\")"}
        }
    }),
    list_dir
);

file_tool!(
    SendFile,
    "send_file",
    "Send a file from the workspace to the user in the chat (up to 50 MiB), with an optional caption.",
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the workspace"},
            "caption": {"type": "string", "description": "Caption shown with the file"}
        },
        "required": ["path"]
    }),
    send_file
);

fn read_file(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = required_str(args, "path")?;
    let offset = optional_u64(args, "offset")?.unwrap_or(1).max(1);
    let limit = optional_u64(args, "limit")?;
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    let file = open(shared, &resolved, OFlags::RDONLY).map_err(|e| format!("cannot read {path}: {e}"))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(format!("{path} is a directory; use list_dir"));
    }
    check_links(shared, &file, path, false)?;
    // Line by line with a byte budget: a huge file costs only what is shown.
    let max = shared.config.max_output_bytes;
    let mut reader = BufReader::new(file);
    let mut out = String::new();
    let mut line = Vec::new();
    let mut lineno: u64 = 0;
    let mut shown: u64 = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(|e| format!("cannot read {path}: {e}"))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if lineno < offset {
            continue;
        }
        if limit.is_some_and(|l| shown >= l) {
            break;
        }
        let entry = format!("{lineno}\t{}", String::from_utf8_lossy(&line));
        if out.len() + entry.len() > max {
            out.push_str(&format!(
                "\n[output cut at line {lineno} to stay under {max} bytes; read on with offset={lineno}]"
            ));
            break;
        }
        out.push_str(&entry);
        shown += 1;
    }
    if out.is_empty() {
        return Ok(ToolOutput::ok(if lineno == 0 {
            "(empty file)".to_string()
        } else {
            format!("(no lines at offset {offset}; the file has {lineno} lines)")
        }));
    }
    Ok(ToolOutput::ok(out))
}

fn write_file(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = required_str(args, "path")?;
    let content = required_str(args, "content")?;
    let resolved = shared.workspace.resolve(path).map_err(|e| e.to_string())?;
    let (root, rel) = shared.workspace.split_resolved(&resolved).map_err(|e| format!("cannot write {path}: {e}"))?;
    let Some(name) = rel.file_name() else {
        return Err(format!("{path} is a directory; give a file path"));
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = confined::ensure_dirs(&root, parent, &|fd| shared.give_to_tools_user(fd))
        .map_err(|e| format!("cannot create the directories of {path}: {e}"))?;
    let fd = confined::open_beneath(&dir, Path::new(name), OFlags::WRONLY | OFlags::CREATE, Mode::from_raw_mode(0o644))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EISDIR) => format!("{path} is a directory; give a file path"),
            _ => format!("cannot write {path}: {e}"),
        })?;
    shared.give_to_tools_user(&fd);
    let file = std::fs::File::from(fd);
    check_links(shared, &file, path, true)?;
    replace_content(file, content.as_bytes()).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(ToolOutput::ok(format!("Wrote {} bytes to {}", content.len(), shared.workspace.relative(&resolved))))
}

fn edit_file(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = required_str(args, "path")?;
    let old = required_str(args, "old_string")?;
    let new = required_str(args, "new_string")?;
    if old.is_empty() {
        return Err("old_string is empty; give the exact text to replace (write_file replaces a whole file)".into());
    }
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let mut file = open(shared, &resolved, OFlags::RDWR).map_err(|e| format!("cannot open {path}: {e}"))?;
    check_links(shared, &file, path, true)?;
    file.read_to_string(&mut text).map_err(|e| format!("cannot read {path} as UTF-8 text: {e}"))?;
    match text.matches(old).count() {
        0 => {
            return Err(format!(
                "old_string not found in {path}; read the file and copy the exact text, whitespace included"
            ));
        }
        1 => {}
        n => {
            return Err(format!(
                "old_string occurs {n} times in {path}; include more surrounding text so it matches exactly once"
            ));
        }
    }
    let edited = text.replacen(old, new, 1);
    replace_content(file, edited.as_bytes()).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(ToolOutput::ok(format!("Edited {}", shared.workspace.relative(&resolved))))
}

fn list_dir(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = optional_str(args, "path")?.unwrap_or(".");
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    let fd =
        shared.workspace.open_resolved(&resolved, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOTDIR) => format!("{path} is not a directory; use read_file"),
                _ => format!("cannot list {path}: {e}"),
            }
        })?;
    let mut listing = Dir::read_from(&fd).map_err(|e| format!("cannot list {path}: {e}"))?;
    let mut entries: Vec<(EntryKind, String)> = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(|e| format!("cannot list {path}: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let mut file_type = entry.file_type();
        if file_type == FileType::Unknown {
            file_type = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode))
                .unwrap_or(FileType::Unknown);
        }
        let kind = match file_type {
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Link,
            _ => EntryKind::File,
        };
        entries.push((kind, name));
    }
    if entries.is_empty() {
        return Ok(ToolOutput::ok("(empty directory)"));
    }
    entries.sort_by(|a, b| {
        (a.0 != EntryKind::Dir).cmp(&(b.0 != EntryKind::Dir)).then_with(|| a.1.to_lowercase().cmp(&b.1.to_lowercase()))
    });
    let lines: Vec<String> = entries
        .into_iter()
        .map(|(kind, name)| match kind {
            EntryKind::Dir => format!("[dir]  {name}"),
            EntryKind::Link => format!("[link]  {name}"),
            EntryKind::File => format!("[file]  {name}"),
        })
        .collect();
    Ok(ToolOutput::ok(super::truncate_middle(&lines.join("\n"), shared.config.max_output_bytes)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File,
    Link,
}

fn send_file(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = required_str(args, "path")?;
    let caption = optional_str(args, "caption")?.unwrap_or("");
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    let file = open(shared, &resolved, OFlags::RDONLY).map_err(|e| format!("cannot read {path}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_SEND_FILE_BYTES {
        return Err(format!("file too large ({} bytes, max {MAX_SEND_FILE_BYTES})", meta.len()));
    }
    check_links(shared, &file, path, false)?;
    let relative = shared.workspace.relative(&resolved);
    let mut out = ToolOutput::ok(format!("File sent to user: {relative}"));
    out.file = Some(SentFile { path: relative, caption: caption.to_string() });
    Ok(out)
}

/// Refuses a file with several hard links where the agent holds more rights than tool processes:
/// such a name may have been linked by a tool process to a file it cannot change itself. Writing
/// is refused for any multiply-linked file; reading only when the agent runs as root and the
/// file is not the tools user's.
fn check_links(shared: &Shared, file: &std::fs::File, path: &str, writing: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() || meta.nlink() <= 1 {
        return Ok(());
    }
    let agent_has_more_rights = matches!(shared.identity, Ok(Some(id)) if id.uid != meta.uid());
    if writing || agent_has_more_rights {
        return Err(format!(
            "{path} has {} hard links, and the file tools do not use files with several names; copy it to a new file first",
            meta.nlink()
        ));
    }
    Ok(())
}

/// Replaces a file's whole content through an already checked descriptor.
fn replace_content(mut file: std::fs::File, content: &[u8]) -> std::io::Result<()> {
    use std::io::Seek;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(content)
}

/// Opens a resolved path with the kernel confining the lookup to the workspace.
fn open(shared: &Shared, resolved: &Path, flags: OFlags) -> std::io::Result<std::fs::File> {
    shared.workspace.open_resolved(resolved, flags, Mode::empty()).map(std::fs::File::from)
}
