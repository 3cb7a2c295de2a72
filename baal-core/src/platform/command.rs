//! The bot's commands, in one table: what parses a command, what `/help` lists and the menu a
//! front-end publishes (Telegram's command list) all come from [`Command::ALL`], so adding a
//! command is one entry here and one arm where it is handled.

/// A command the platform understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Welcome, or open the agent a share link names.
    Start,
    /// Create an agent (the wizard).
    Create,
    /// The user's agents.
    List,
    /// View or change an agent's personality.
    Soul,
    /// Restart an agent with the latest settings.
    Update,
    /// Retry a failed deployment.
    Repair,
    /// Delete an agent.
    Delete,
    /// Leave the chat with an agent.
    Manage,
    /// Forget one's own conversation with the current agent.
    Reset,
    /// Stop the answer being written in this chat, and its tools.
    Stop,
    /// Stop what the user is doing.
    Cancel,
    /// Plan, usage and agents.
    Account,
    /// Health of the user's agents (and, for admins, the fleet).
    Dashboard,
    /// Use one's own LibertAI key.
    Login,
    /// Forget one's LibertAI key.
    Logout,
    /// Show or hide the agent's tool calls.
    Verbose,
    /// How to use Baal.
    Help,
    /// The Aleph VM pool (admins).
    Pool,
    /// Confirm the `/create` wizard.
    Confirm,
}

/// Where a command appears in `/help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelpSection {
    /// Not listed (`/start`, `/help`, `/confirm`).
    Hidden,
    /// Working with agents.
    Agents,
    /// The user's account and keys.
    Account,
    /// Operators only.
    Operators,
}

/// Who may see a command in menus and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// Everyone.
    Everyone,
    /// `ADMIN_USER_IDS` only.
    Admins,
}

/// One command's entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandSpec {
    /// The command.
    pub command: Command,
    /// Its name, without the slash.
    pub name: &'static str,
    /// Its arguments as shown in `/help` (`<id>`), or empty.
    pub args: &'static str,
    /// The line `/help` shows after the name.
    pub help: &'static str,
    /// The short description of a command menu; `None` keeps it out of menus.
    pub menu: Option<&'static str>,
    /// Where `/help` lists it.
    pub section: HelpSection,
    /// Who sees it.
    pub audience: Audience,
}

const fn spec(
    command: Command,
    name: &'static str,
    args: &'static str,
    help: &'static str,
    menu: Option<&'static str>,
    section: HelpSection,
) -> CommandSpec {
    CommandSpec { command, name, args, help, menu, section, audience: Audience::Everyone }
}

impl Command {
    /// Every command, in the order menus and `/help` list them.
    pub const ALL: &'static [CommandSpec] = &[
        spec(Command::Start, "start", "", "welcome", Some("Welcome and what Baal can do"), HelpSection::Hidden),
        spec(Command::Create, "create", "", "a new agent", Some("Create a new agent"), HelpSection::Agents),
        spec(
            Command::List,
            "list",
            "",
            "your agents, with their share links",
            Some("Your agents"),
            HelpSection::Agents,
        ),
        spec(
            Command::Soul,
            "soul",
            "",
            "view or change an agent's personality",
            Some("View or change an agent's personality"),
            HelpSection::Agents,
        ),
        spec(
            Command::Update,
            "update",
            "",
            "restart an agent with the latest settings",
            Some("Restart an agent with the latest settings"),
            HelpSection::Agents,
        ),
        spec(
            Command::Repair,
            "repair",
            "",
            "retry a failed deployment",
            Some("Retry a failed deployment"),
            HelpSection::Agents,
        ),
        spec(Command::Delete, "delete", "<id>", "delete an agent", Some("Delete an agent"), HelpSection::Agents),
        spec(
            Command::Manage,
            "manage",
            "",
            "leave the chat with an agent",
            Some("Leave the chat with an agent"),
            HelpSection::Agents,
        ),
        spec(
            Command::Reset,
            "reset",
            "",
            "start your conversation with the current agent over",
            Some("Start your conversation with this agent over"),
            HelpSection::Agents,
        ),
        spec(
            Command::Stop,
            "stop",
            "",
            "stop the answer being written, and its tools",
            Some("Stop the answer being written"),
            HelpSection::Agents,
        ),
        spec(
            Command::Cancel,
            "cancel",
            "",
            "stop what you're doing",
            Some("Stop what you are doing"),
            HelpSection::Agents,
        ),
        spec(
            Command::Account,
            "account",
            "",
            "plan, usage and agents",
            Some("Your plan and today's usage"),
            HelpSection::Account,
        ),
        spec(
            Command::Dashboard,
            "dashboard",
            "",
            "health of your agents",
            Some("Health of your agents"),
            HelpSection::Account,
        ),
        spec(
            Command::Login,
            "login",
            "<key>",
            "use your own LibertAI key",
            Some("Use your own LibertAI API key"),
            HelpSection::Account,
        ),
        spec(
            Command::Logout,
            "logout",
            "",
            "go back to the free tier",
            Some("Forget your LibertAI API key"),
            HelpSection::Account,
        ),
        spec(
            Command::Verbose,
            "verbose",
            "",
            "show or hide the agent's tool calls",
            Some("Show or hide the agent's tool use"),
            HelpSection::Account,
        ),
        spec(Command::Help, "help", "", "how to use Baal", Some("How to use Baal"), HelpSection::Hidden),
        CommandSpec {
            audience: Audience::Admins,
            ..spec(Command::Pool, "pool", "", "the VM pool", None, HelpSection::Operators)
        },
        spec(Command::Confirm, "confirm", "", "confirm what you are creating", None, HelpSection::Hidden),
    ];

    /// The command called `name` (without the slash, any case).
    pub fn parse(name: &str) -> Option<Command> {
        let name = name.trim_start_matches('/');
        Command::ALL.iter().find(|spec| spec.name.eq_ignore_ascii_case(name)).map(|spec| spec.command)
    }

    /// This command's entry.
    pub fn spec(self) -> &'static CommandSpec {
        Command::ALL.iter().find(|spec| spec.command == self).unwrap_or(&Command::ALL[0])
    }

    /// Its name, without the slash.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The menu everyone sees, as `(name, description)`, in order (what a front-end publishes).
    pub fn menu() -> impl Iterator<Item = (&'static str, &'static str)> {
        Command::ALL
            .iter()
            .filter(|spec| spec.audience == Audience::Everyone)
            .filter_map(|spec| spec.menu.map(|menu| (spec.name, menu)))
    }

    /// The `/help` lines of `section` an admin (or not) sees: `/name args: help`, with `<` and `>`
    /// escaped for HTML.
    pub(crate) fn help_lines(section: HelpSection, admin: bool) -> Vec<String> {
        Command::ALL
            .iter()
            .filter(|spec| spec.section == section && (admin || spec.audience == Audience::Everyone))
            .map(|spec| {
                let args = if spec.args.is_empty() {
                    String::new()
                } else {
                    format!(" {}", spec.args.replace('<', "&lt;").replace('>', "&gt;"))
                };
                format!("/{}{args}: {}", spec.name, spec.help)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_one_entry_and_parses_by_its_name() {
        for spec in Command::ALL {
            assert_eq!(Command::parse(spec.name), Some(spec.command), "{}", spec.name);
            assert_eq!(Command::ALL.iter().filter(|s| s.command == spec.command).count(), 1);
            assert_eq!(spec.command.name(), spec.name);
        }
        assert_eq!(Command::parse("/LIST"), Some(Command::List));
        assert_eq!(Command::parse("nope"), None);
    }

    #[test]
    fn the_menu_leaves_out_admin_and_hidden_commands() {
        let menu: Vec<&str> = Command::menu().map(|(name, _)| name).collect();
        assert_eq!(menu.first(), Some(&"start"));
        assert!(menu.contains(&"help") && menu.contains(&"login"));
        assert!(!menu.contains(&"pool") && !menu.contains(&"confirm"), "{menu:?}");
        // Telegram's limits for a menu entry.
        for (name, description) in Command::menu() {
            assert!(name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert!((3..=256).contains(&description.len()), "{description}");
        }
    }

    #[test]
    fn help_lists_admin_commands_only_for_admins() {
        assert!(Command::help_lines(HelpSection::Operators, false).is_empty());
        assert_eq!(Command::help_lines(HelpSection::Operators, true), vec!["/pool: the VM pool".to_owned()]);
        let agents = Command::help_lines(HelpSection::Agents, false);
        assert!(agents.contains(&"/delete &lt;id&gt;: delete an agent".to_owned()), "{agents:?}");
    }
}
