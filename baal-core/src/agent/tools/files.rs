//! The file tools: `read_file`, `write_file`, `edit_file`, `list_dir` and `send_file`. Every path
//! goes through the workspace resolver first; the work itself runs on the blocking pool.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{
    SentFile, Shared, Tool, ToolContext, ToolOutput, error_output, object_args, optional_str, optional_u64,
    required_str,
};

/// Largest file `send_file` hands over (Telegram's own bot upload limit is of this order).
pub(crate) const MAX_SEND_FILE_BYTES: u64 = 50 * 1024 * 1024;

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
    if resolved.is_dir() {
        return Err(format!("{path} is a directory; use list_dir"));
    }
    let file = open_no_follow(&resolved, false).map_err(|e| format!("cannot read {path}: {e}"))?;
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
        let text = String::from_utf8_lossy(&line);
        let entry = format!("{lineno}\t{text}");
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
    if resolved.is_dir() {
        return Err(format!("{path} is a directory; give a file path"));
    }
    if let Some(parent) = resolved.parent() {
        create_dirs(shared, parent).map_err(|e| format!("cannot create the directories of {path}: {e}"))?;
    }
    let mut file = open_no_follow(&resolved, true).map_err(|e| format!("cannot write {path}: {e}"))?;
    file.write_all(content.as_bytes()).map_err(|e| format!("cannot write {path}: {e}"))?;
    shared.give_to_tools_user(&resolved);
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
    std::io::Read::read_to_string(
        &mut open_no_follow(&resolved, false).map_err(|e| format!("cannot read {path}: {e}"))?,
        &mut text,
    )
    .map_err(|e| format!("cannot read {path} as UTF-8 text: {e}"))?;
    let count = text.matches(old).count();
    match count {
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
    let mut file = open_no_follow(&resolved, true).map_err(|e| format!("cannot write {path}: {e}"))?;
    file.write_all(edited.as_bytes()).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(ToolOutput::ok(format!("Edited {}", shared.workspace.relative(&resolved))))
}

fn list_dir(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = optional_str(args, "path")?.unwrap_or(".");
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    if !resolved.is_dir() {
        return Err(format!("{path} is not a directory; use read_file"));
    }
    let mut entries: Vec<(u8, String)> = Vec::new();
    for entry in std::fs::read_dir(&resolved).map_err(|e| format!("cannot list {path}: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot list {path}: {e}"))?;
        let kind = match entry.file_type() {
            Ok(t) if t.is_dir() => 0,
            Ok(t) if t.is_symlink() => 2,
            _ => 1,
        };
        entries.push((kind, entry.file_name().to_string_lossy().into_owned()));
    }
    if entries.is_empty() {
        return Ok(ToolOutput::ok("(empty directory)"));
    }
    entries.sort_by(|a, b| {
        (a.0 == 0).cmp(&(b.0 == 0)).reverse().then_with(|| a.1.to_lowercase().cmp(&b.1.to_lowercase()))
    });
    let lines: Vec<String> = entries
        .into_iter()
        .map(|(kind, name)| match kind {
            0 => format!("[dir]  {name}"),
            2 => format!("[link]  {name}"),
            _ => format!("[file]  {name}"),
        })
        .collect();
    Ok(ToolOutput::ok(super::truncate_middle(&lines.join("\n"), shared.config.max_output_bytes)))
}

fn send_file(shared: &Shared, args: &Args) -> Result<ToolOutput, String> {
    let path = required_str(args, "path")?;
    let caption = optional_str(args, "caption")?.unwrap_or("");
    let resolved = shared.workspace.resolve_existing(path).map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_SEND_FILE_BYTES {
        return Err(format!("file too large ({} bytes, max {MAX_SEND_FILE_BYTES})", meta.len()));
    }
    let relative = shared.workspace.relative(&resolved);
    let mut out = ToolOutput::ok(format!("File sent to user: {relative}"));
    out.file = Some(SentFile { path: relative, caption: caption.to_string() });
    Ok(out)
}

/// Opens a resolved path without following a symlink in its last component: the resolver has
/// already followed every link, so one appearing now was planted after the check.
fn open_no_follow(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    if write {
        options.write(true).create(true).truncate(true).mode(0o644);
    } else {
        options.read(true);
    }
    options.custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Creates `dir` and its missing parents, handing each new one to the tools user.
fn create_dirs(shared: &Shared, dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.into_iter().rev() {
        shared.give_to_tools_user(created);
    }
    Ok(())
}
