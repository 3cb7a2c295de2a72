//! The agent's workspace files and the system prompt built from them: identity, the owner's
//! instructions, memory (`memory/MEMORY.md`, today's `memory/YYYY-MM-DD.md`), skill summaries
//! (`skills/*/SKILL.md`) and guidance on the memory system.
//!
//! Invariant: the prompt depends only on the date (never the time) and the files, so it stays
//! byte-stable for a whole day while they do not change, and the inference server's prefix cache
//! keeps hitting.

use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// The skills shipped with every agent, as `(directory, SKILL.md)`.
pub const DEFAULT_SKILLS: &[(&str, &str)] = &[
    ("memory-management", include_str!("skills/memory-management/SKILL.md")),
    ("weather", include_str!("skills/weather/SKILL.md")),
    ("web-research", include_str!("skills/web-research/SKILL.md")),
];

const MEMORY_TEMPLATE: &str = "# Memory\n\n(Nothing saved yet.)\n";

/// Longest memory file put into the prompt, in bytes; a runaway file must not eat the context.
const MAX_MEMORY_BYTES: usize = 16 * 1024;

const SECTION_SEPARATOR: &str = "\n\n---\n\n";

/// The agent's workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Creates the workspace layout if needed (`memory/`, `skills/`, the memory template and the
    /// default skills, each only when absent, so the owner's edits survive restarts).
    pub fn prepare(root: &Path) -> io::Result<Workspace> {
        std::fs::create_dir_all(root.join("memory"))?;
        std::fs::create_dir_all(root.join("skills"))?;
        let root = root.canonicalize()?;
        let memory = root.join("memory").join("MEMORY.md");
        if !memory.exists() {
            std::fs::write(&memory, MEMORY_TEMPLATE)?;
        }
        for (name, text) in DEFAULT_SKILLS {
            let dir = root.join("skills").join(name);
            if !dir.exists() {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("SKILL.md"), text)?;
            }
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

    /// The system prompt for `today`, offering `tool_names`.
    pub fn system_prompt(&self, agent_name: &str, instructions: &str, tool_names: &[&str], today: NaiveDate) -> String {
        let ws = self.root.display();
        let mut sections = Vec::new();

        let mut identity =
            format!("You are {agent_name}, a personal AI agent.\nCurrent date: {today}\nWorkspace: {ws}");
        if !tool_names.is_empty() {
            identity.push_str(&format!("\nAvailable tools: {}", tool_names.join(", ")));
        }
        sections.push(identity);

        if !instructions.trim().is_empty() {
            sections.push(format!("## Instructions\n\n{}", instructions.trim()));
        }

        let mut memory = Vec::new();
        if let Some(text) = read_trimmed(&self.root.join("memory").join("MEMORY.md")) {
            memory.push(format!("### Long-term Memory\n\n{text}"));
        }
        if let Some(text) = read_trimmed(&self.root.join("memory").join(format!("{today}.md"))) {
            memory.push(format!("### Today's Notes ({today})\n\n{text}"));
        }
        if !memory.is_empty() {
            sections.push(format!("## Memory\n\n{}", memory.join("\n\n")));
        }

        let skills = self.skill_summaries();
        if !skills.is_empty() {
            sections.push(format!("## Available Skills\n\n{}", skills.join("\n")));
        }

        sections.push(format!(
            "## Memory System\n\n\
             You keep memory in files of your workspace.\n\
             - Lasting facts about the user and their projects: `{ws}/memory/MEMORY.md` (update it with write_file or edit_file).\n\
             - Notes on today's work: `{ws}/memory/{today}.md`.\n\
             - When a skill above fits the task, read its SKILL.md before acting."
        ));
        sections.join(SECTION_SEPARATOR)
    }

    fn skill_summaries(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("skills")) else { return Vec::new() };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path().join("SKILL.md")))
            .filter(|(_, skill)| skill.is_file())
            .collect();
        dirs.sort();
        dirs.into_iter()
            .map(|(name, path)| {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let summary =
                    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("").to_owned();
                format!("- **{name}**: {summary} (read `{}` for details)", path.display())
            })
            .collect()
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.len() <= MAX_MEMORY_BYTES {
        return Some(text.to_owned());
    }
    let mut end = MAX_MEMORY_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}\n\n(… cut here: the file is longer than {MAX_MEMORY_BYTES} bytes; tidy it up.)", &text[..end]))
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
        let a = ws.system_prompt("Jo", "  Be brief.  ", &["bash", "read_file"], day);
        let b = ws.system_prompt("Jo", "  Be brief.  ", &["bash", "read_file"], day);
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
        let prompt = ws.system_prompt("A", "", &[], NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert!(prompt.contains("- **weather**: mine"));
        assert!(prompt.contains("likes tea"));
        assert!(!prompt.contains("## Instructions"));
    }
}
