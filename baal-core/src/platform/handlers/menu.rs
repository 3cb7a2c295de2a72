//! Baal's own menu: the welcome and /help.

pub(crate) mod views;

use crate::platform::engine::{Ctx, Inner, PlatformError};

impl Inner {
    pub(super) async fn help(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let admin = self.config.is_admin(ctx.user_id());
        let text = views::help(self.deployer.usual_deploy_duration(), admin);
        self.say(ctx.chat, text).await;
        Ok(())
    }
}
