//! What the platform asks of a front-end. Texts are in Telegram's HTML subset (`<b>`, `<i>`,
//! `<u>`, `<s>`, `<code>`, `<pre>`, `<a href>`, `<blockquote>`), already escaped and already split
//! to fit one message (4096 UTF-16 code units); a front-end renders them, it never rewrites them.

use async_trait::async_trait;

/// A chat (private chats have the user's id).
pub type ChatId = i64;

/// A message the front-end sent or received, so it can be edited or deleted later. Deliberately
/// exhaustive: front-ends build it from their own ids, and a chat plus a message id is all it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageRef {
    /// The chat.
    pub chat_id: ChatId,
    /// The message id in that chat.
    pub message_id: i64,
}

/// An inline button.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Button {
    /// Sends `data` back as [`super::InputKind::Button`]. `data` is at most 64 bytes.
    Callback {
        /// Label.
        label: String,
        /// Callback data.
        data: String,
    },
    /// Opens a URL.
    Url {
        /// Label.
        label: String,
        /// Target.
        url: String,
    },
}

impl Button {
    /// A callback button.
    pub fn callback(label: impl Into<String>, data: impl Into<String>) -> Self {
        Button::Callback { label: label.into(), data: data.into() }
    }

    /// A button that performs `action` when pressed (the platform's own buttons).
    pub fn action(label: impl Into<String>, action: super::action::Action) -> Self {
        Button::Callback { label: label.into(), data: action.encode() }
    }

    /// A URL button.
    pub fn url(label: impl Into<String>, url: impl Into<String>) -> Self {
        Button::Url { label: label.into(), url: url.into() }
    }

    /// The label.
    pub fn label(&self) -> &str {
        match self {
            Button::Callback { label, .. } | Button::Url { label, .. } => label,
        }
    }
}

/// A message body: HTML (Telegram subset) or plain text, with button rows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Text {
    /// The body.
    pub body: String,
    /// Whether `body` is HTML (otherwise plain text).
    pub html: bool,
    /// Rows of inline buttons.
    pub buttons: Vec<Vec<Button>>,
}

impl Text {
    /// An HTML body.
    pub fn html(body: impl Into<String>) -> Self {
        Text { body: body.into(), html: true, buttons: Vec::new() }
    }

    /// A plain-text body.
    pub fn plain(body: impl Into<String>) -> Self {
        Text { body: body.into(), html: false, buttons: Vec::new() }
    }

    /// Adds a row of buttons.
    pub fn row(mut self, row: Vec<Button>) -> Self {
        self.buttons.push(row);
        self
    }
}

/// A photo or document to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutgoingFile {
    /// File name shown to the user.
    pub file_name: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Send as a photo (small images) rather than a document.
    pub as_photo: bool,
    /// Caption (HTML), possibly empty.
    pub caption: String,
}

impl OutgoingFile {
    /// A document with no caption.
    pub fn document(file_name: impl Into<String>, bytes: Vec<u8>) -> Self {
        OutgoingFile { file_name: file_name.into(), bytes, as_photo: false, caption: String::new() }
    }

    /// A photo (a small image) with no caption.
    pub fn photo(file_name: impl Into<String>, bytes: Vec<u8>) -> Self {
        OutgoingFile { as_photo: true, ..OutgoingFile::document(file_name, bytes) }
    }

    /// Sets the caption (HTML, already escaped).
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }
}

/// A front-end could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessengerError {
    /// The message is gone or cannot be edited any more.
    #[error("message not found")]
    NotFound,
    /// The front-end rejected the content (for example HTML it cannot parse).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The chat will never accept messages from the bot (the user blocked it or deleted their
    /// account, the chat does not exist or forbids writing): trying again cannot help.
    #[error("the chat accepts no messages: {0}")]
    Gone(String),
    /// Anything else (network, flood limits that outlasted retries).
    #[error("{0}")]
    Failed(String),
}

/// What the platform asks of a front-end.
#[async_trait]
pub trait Messenger: Send + Sync {
    /// Sends a message and returns its reference.
    async fn send(&self, chat: ChatId, text: Text) -> Result<MessageRef, MessengerError>;
    /// Replaces a message's text and buttons.
    async fn edit(&self, message: MessageRef, text: Text) -> Result<(), MessengerError>;
    /// Deletes a message.
    async fn delete(&self, message: MessageRef) -> Result<(), MessengerError>;
    /// Shows "typing…" for a few seconds.
    async fn typing(&self, chat: ChatId) -> Result<(), MessengerError>;
    /// Sends a photo or document.
    async fn send_file(&self, chat: ChatId, file: OutgoingFile) -> Result<MessageRef, MessengerError>;
    /// Answers a button press with a short notice (empty: just acknowledge it).
    async fn answer_press(&self, press_id: &str, notice: &str) -> Result<(), MessengerError>;
}
