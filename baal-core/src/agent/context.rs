//! The agent's workspace files and the system prompt built from them: identity, the owner's
//! instructions, memory (`memory/MEMORY.md`, today's `memory/YYYY-MM-DD.md`), skill summaries
//! (`skills/*/SKILL.md`) and guidance on the memory system.
//!
//! Invariant: the prompt depends only on the date (never the time) and the files, so it stays
//! byte-stable for a whole day while they do not change, and the inference server's prefix cache
//! keeps hitting. Every file is read through the file tools' confined open (no symlink, regular
//! files only, bounded), and a visitor's prompt carries none of the owner's memory or notes.

use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rustix::fs::{Mode, OFlags};

use super::tools::confined;

/// The skills shipped with every agent, as `(directory, SKILL.md)`.
pub const DEFAULT_SKILLS: &[(&str, &str)] = &[
    ("memory-management", include_str!("skills/memory-management/SKILL.md")),
    ("weather", include_str!("skills/weather/SKILL.md")),
    ("web-research", include_str!("skills/web-research/SKILL.md")),
];

const MEMORY_TEMPLATE: &str = "# Memory\n\n(Nothing saved yet.)\n";

/// Longest memory file put into the prompt, in bytes; a runaway file must not eat the context.
const MAX_MEMORY_BYTES: usize = 16 * 1024;
/// How much of a `SKILL.md` is read for its one-line summary.
const MAX_SKILL_BYTES: usize = 16 * 1024;
/// Longest `HEARTBEAT.md` read, in bytes.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;
/// Skills listed in the prompt at most: a tool could create thousands of directories.
const MAX_SKILLS: usize = 64;

const SECTION_SEPARATOR: &str = "\n\n---\n\n";

/// Who the prompt is for: the owner sees their memory; a visitor gets the agent's persona and
/// skills, and none of the owner's memory or notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// The agent's owner (and the owner's heartbeat and subagents).
    Owner,
    /// Anyone else with the share link.
    Visitor,
}

/// The agent's workspace directory.
///
/// Everything the agent reads from it for itself (memory, notes, `HEARTBEAT.md`, skills) is opened
/// like the file tools open files: beneath the workspace, refusing every symlink, regular files
/// only, bounded. Tools write the workspace, so any name in it may be a planted link or a FIFO.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Creates the workspace layout if needed (`memory/`, `skills/`, the memory template and the
    /// default skills, each only when absent, so the owner's edits survive restarts). Only the
    /// root itself must be creatable: a part a tool replaced (a symlink where `memory/` was, a
    /// dangling link as `MEMORY.md`) is left alone and logged, and the agent starts without it.
    pub fn prepare(root: &Path) -> io::Result<Workspace> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let dir = confined::open_dir(&root)?;
        let skip = |what: &str, e: io::Error| {
            tracing::warn!(part = what, error = %e, "a part of the workspace is not as prepared; left as it is");
        };
        let none = |_: &OwnedFd| {};
        match confined::ensure_dirs(&dir, Path::new("memory"), &none) {
            Ok(memory) => {
                if let Err(e) = create_new(&memory, "MEMORY.md", MEMORY_TEMPLATE) {
                    skip("memory/MEMORY.md", e);
                }
            }
            Err(e) => skip("memory/", e),
        }
        match confined::ensure_dirs(&dir, Path::new("skills"), &none) {
            Ok(skills) => {
                for (name, text) in DEFAULT_SKILLS {
                    // Only a skill whose directory is new gets the default: a deleted SKILL.md
                    // in a kept directory is the owner's choice.
                    match rustix::fs::mkdirat(&skills, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) => continue,
                        Err(e) => {
                            skip("skills/", e.into());
                            continue;
                        }
                    }
                    let written = confined::open_beneath(
                        &skills,
                        Path::new(name),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                        Mode::empty(),
                    )
                    .and_then(|skill| create_new(&skill, "SKILL.md", text));
                    if let Err(e) = written {
                        skip("skills/*/SKILL.md", e);
                    }
                }
            }
            Err(e) => skip("skills/", e),
        }
        Ok(Workspace { root })
    }

    /// The absolute workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `HEARTBEAT.md`.
    pub fn heartbeat_file(&self) -> PathBuf {
        self.root.join("HEARTBEAT.md")
    }

    /// The text of `HEARTBEAT.md` (at most [`MAX_HEARTBEAT_BYTES`]), or `None` when there is no
    /// such regular file beneath the workspace.
    pub fn read_heartbeat(&self) -> Option<String> {
        self.read(Path::new("HEARTBEAT.md"), MAX_HEARTBEAT_BYTES).map(|(text, _)| text)
    }

    /// The system prompt for `today`, offering `tool_names`, for `audience`.
    pub fn system_prompt(
        &self,
        agent_name: &str,
        instructions: &str,
        tool_names: &[&str],
        today: NaiveDate,
        audience: Audience,
    ) -> String {
        let ws = self.root.display();
        let mut sections = Vec::new();

        let mut identity =
            format!("You are {agent_name}, a personal AI agent.\nCurrent date: {today}\nWorkspace: {ws}");
        if !tool_names.is_empty() {
            identity.push_str(&format!("\nAvailable tools: {}", tool_names.join(", ")));
        }
        if audience == Audience::Visitor {
            identity.push_str(
                "\nYou are talking with a visitor, not your owner: your owner's memory and notes are not \
                 shared with visitors.",
            );
        }
        sections.push(identity);

        if !instructions.trim().is_empty() {
            sections.push(format!("## Instructions\n\n{}", instructions.trim()));
        }

        if audience == Audience::Owner {
            let mut memory = Vec::new();
            if let Some(text) = self.read_memory(Path::new("memory/MEMORY.md")) {
                memory.push(format!("### Long-term Memory\n\n{text}"));
            }
            if let Some(text) = self.read_memory(&Path::new("memory").join(format!("{today}.md"))) {
                memory.push(format!("### Today's Notes ({today})\n\n{text}"));
            }
            if !memory.is_empty() {
                sections.push(format!("## Memory\n\n{}", memory.join("\n\n")));
            }
        }

        let skills = self.skill_summaries();
        if !skills.is_empty() {
            sections.push(format!("## Available Skills\n\n{}", skills.join("\n")));
        }

        if audience == Audience::Owner {
            sections.push(format!(
                "## Memory System\n\n\
                 You keep memory in files of your workspace.\n\
                 - Lasting facts about the user and their projects: `{ws}/memory/MEMORY.md` (update it with write_file or edit_file).\n\
                 - Notes on today's work: `{ws}/memory/{today}.md`.\n\
                 - When a skill above fits the task, read its SKILL.md before acting."
            ));
        } else {
            sections.push("## Skills\n\nWhen a skill above fits the task, read its SKILL.md before acting.".to_owned());
        }
        sections.join(SECTION_SEPARATOR)
    }

    fn skill_summaries(&self) -> Vec<String> {
        let Ok(root) = confined::open_dir(&self.root) else { return Vec::new() };
        let Ok(skills) =
            confined::open_beneath(&root, Path::new("skills"), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        else {
            return Vec::new();
        };
        let Ok(mut entries) = rustix::fs::Dir::read_from(&skills) else { return Vec::new() };
        let mut names = Vec::new();
        while let Some(Ok(entry)) = entries.read() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type() == rustix::fs::FileType::Directory {
                names.push(name);
            }
        }
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                let rel = Path::new("skills").join(&name).join("SKILL.md");
                let (text, _) = self.read(&rel, MAX_SKILL_BYTES)?;
                let summary =
                    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("").to_owned();
                Some(format!("- **{name}**: {summary} (read `{}` for details)", self.root.join(&rel).display()))
            })
            .take(MAX_SKILLS)
            .collect()
    }

    /// A memory file for the prompt, trimmed and cut at [`MAX_MEMORY_BYTES`] with a note.
    fn read_memory(&self, rel: &Path) -> Option<String> {
        let (text, longer) = self.read(rel, MAX_MEMORY_BYTES)?;
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if !longer {
            return Some(text.to_owned());
        }
        Some(format!("{text}\n\n(… cut here: the file is longer than {MAX_MEMORY_BYTES} bytes; tidy it up.)"))
    }

    /// Reads at most `max` bytes of the regular file `rel` beneath the workspace (no symlink on
    /// the way), cut at a character boundary, and whether there was more. `None` when there is no
    /// such file or it cannot be read (a planted link or FIFO reads as absent).
    fn read(&self, rel: &Path, max: usize) -> Option<(String, bool)> {
        let root = confined::open_dir(&self.root).ok()?;
        // Non-blocking, so a FIFO planted under the name cannot hang the open.
        let fd = confined::open_beneath(&root, rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).ok()?;
        if rustix::fs::fstat(&fd).ok().map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode))
            != Some(rustix::fs::FileType::RegularFile)
        {
            return None;
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd).take(max as u64 + 1).read_to_end(&mut bytes).ok()?;
        let longer = bytes.len() > max;
        bytes.truncate(max);
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
        };
        Some((text, longer))
    }
}

/// Creates `name` in `dir` with `text` unless something (anything, a dangling link included)
/// already has that name; never follows a link.
fn create_new(dir: &OwnedFd, name: &str, text: &str) -> io::Result<()> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
    match confined::open_beneath(dir, Path::new(name), flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => {
            use std::io::Write as _;
            std::fs::File::from(fd).write_all(text.as_bytes())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_every_section_and_is_stable_within_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        std::fs::write(ws.root().join("memory/2026-11-25.md"), "walked the dog\n").unwrap();
        let a = ws.system_prompt("Jo", "  Be brief.  ", &["bash", "read_file"], day, Audience::Owner);
        let b = ws.system_prompt("Jo", "  Be brief.  ", &["bash", "read_file"], day, Audience::Owner);
        assert_eq!(a, b);
        assert!(a.starts_with("You are Jo, a personal AI agent.\nCurrent date: 2026-11-25\n"));
        assert!(a.contains("Available tools: bash, read_file"));
        assert!(a.contains("## Instructions\n\nBe brief."));
        assert!(a.contains("### Long-term Memory\n\n# Memory"));
        assert!(a.contains("### Today's Notes (2026-11-25)\n\nwalked the dog"));
        let skills = a.find("- **memory-management**").unwrap();
        assert!(
            skills < a.find("- **weather**").unwrap()
                && a.find("- **weather**").unwrap() < a.find("- **web-research**").unwrap()
        );
        assert!(a.ends_with("read its SKILL.md before acting."));
        assert_eq!(a.matches(SECTION_SEPARATOR).count(), 4);
    }

    #[test]
    fn prepare_keeps_the_owners_edits() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        std::fs::write(ws.root().join("skills/weather/SKILL.md"), "# W\nmine\n").unwrap();
        std::fs::write(ws.root().join("memory/MEMORY.md"), "# Memory\nlikes tea\n").unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        let prompt = ws.system_prompt("A", "", &[], NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), Audience::Owner);
        assert!(prompt.contains("- **weather**: mine"));
        assert!(prompt.contains("likes tea"));
        assert!(!prompt.contains("## Instructions"));
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    /// A tool planted `memory/MEMORY.md -> <a file outside>`: the prompt does not follow it.
    #[test]
    fn the_prompt_follows_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join(".env");
        std::fs::write(&secret, "TELEGRAM_BOT_TOKEN=sk-operator-secret\n").unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        let memory = ws.root().join("memory/MEMORY.md");
        std::fs::remove_file(&memory).unwrap();
        std::os::unix::fs::symlink(&secret, &memory).unwrap();
        std::os::unix::fs::symlink(&secret, ws.root().join("memory/2026-12-03.md")).unwrap();
        std::fs::create_dir(ws.root().join("skills/planted")).unwrap();
        std::os::unix::fs::symlink(&secret, ws.root().join("skills/planted/SKILL.md")).unwrap();
        std::os::unix::fs::symlink(&secret, ws.root().join("HEARTBEAT.md")).unwrap();
        let prompt = ws.system_prompt("A", "", &[], day(), Audience::Owner);
        assert!(!prompt.contains("sk-operator-secret"), "{prompt}");
        assert!(!prompt.contains("### Long-term Memory"), "{prompt}");
        assert_eq!(ws.read_heartbeat(), None);
    }

    /// A dangling link (or a link where a directory was) left by a tool neither bricks the next
    /// start nor makes the start create a file where it points.
    #[test]
    fn planted_links_do_not_brick_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        let target = outside.path().join("created-by-the-agent");
        let memory = ws.root().join("memory/MEMORY.md");
        std::fs::remove_file(&memory).unwrap();
        std::os::unix::fs::symlink(&target, &memory).unwrap();
        std::fs::remove_dir_all(ws.root().join("skills")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.root().join("skills")).unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        assert!(!target.exists(), "the start wrote through a planted link");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "the start wrote into a linked directory");
        let prompt = ws.system_prompt("A", "", &[], day(), Audience::Owner);
        assert!(!prompt.contains("## Available Skills"), "{prompt}");
    }

    /// A FIFO under a memory file's name reads as absent instead of hanging the prompt.
    #[test]
    fn a_planted_fifo_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        let notes = ws.root().join("memory/2026-12-03.md");
        rustix::fs::mknodat(rustix::fs::CWD, &notes, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o644), 0)
            .unwrap();
        let prompt = ws.system_prompt("A", "", &[], day(), Audience::Owner);
        assert!(!prompt.contains("Today's Notes"), "{prompt}");
    }

    #[test]
    fn a_visitor_prompt_has_the_persona_and_skills_but_none_of_the_owners_memory() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::prepare(dir.path()).unwrap();
        std::fs::write(ws.root().join("memory/MEMORY.md"), "# Memory\nthe owner's bank is Acme\n").unwrap();
        std::fs::write(ws.root().join("memory/2026-12-03.md"), "owner's note\n").unwrap();
        let visitor = ws.system_prompt("Jo", "Be kind.", &["web_fetch"], day(), Audience::Visitor);
        assert!(visitor.contains("## Instructions\n\nBe kind.") && visitor.contains("- **weather**"), "{visitor}");
        assert!(!visitor.contains("Acme") && !visitor.contains("owner's note"), "{visitor}");
        assert!(!visitor.contains("MEMORY.md"), "{visitor}");
        let owner = ws.system_prompt("Jo", "Be kind.", &["web_fetch"], day(), Audience::Owner);
        assert!(owner.contains("Acme") && owner.contains("owner's note"), "{owner}");
    }
}
