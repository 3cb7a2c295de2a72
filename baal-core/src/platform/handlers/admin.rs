//! What operators and owners see of the fleet: /dashboard and /pool.

pub(crate) mod views;

use std::time::Duration;

use self::views::{Fleet, PlanLine};
use super::account::USAGE_VIEW_DAYS;
use super::views::{name_in, usage_section};
use crate::domain::{AgentStatus, usage_day};
use crate::metering::UsageReport;
use crate::platform::Plan;
use crate::platform::engine::{Ctx, Inner, PlatformError};
use crate::platform::messenger::Text;
use crate::store::{AgentFilter, UsageQuery};

/// How long the dashboard waits for each agent's health answer.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

impl Inner {
    pub(super) async fn dashboard(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        let agents = self.store.list_agents(&AgentFilter::all().owner(ctx.user_id())).await?;
        let checks = agents.iter().map(|agent| async move {
            if agent.status != AgentStatus::Running {
                return false;
            }
            let Some(endpoint) = self.endpoint(agent) else { return false };
            matches!(tokio::time::timeout(HEALTH_WAIT, self.proxy.health(&endpoint)).await, Ok(Ok(_)))
        });
        let healthy = futures_util::future::join_all(checks).await;
        let now = self.now();
        let (day, _) = usage_day(now);
        let user = self.store.user_get(ctx.user_id()).await?.unwrap_or_else(|| ctx.user.clone());
        let plan = match Plan::of(&user, &self.config) {
            Plan::OwnKey => PlanLine::OwnKey,
            Plan::FreeTier { daily_messages } => {
                PlanLine::FreeTier { used: self.store.usage_get(ctx.user_id(), day).await?, limit: daily_messages }
            }
            _ => PlanLine::NoKey,
        };
        let (fleet_agents, users, free_messages_today, fleet_usage) = if self.config.is_admin(ctx.user_id()) {
            let fleet = self.store.list_agents(&AgentFilter::all()).await?;
            let users = self.store.users_list().await?.len();
            let messages: u32 = self.store.usage_on(day).await?.iter().map(|row| row.messages).sum();
            let from = day - chrono::Days::new(u64::from(USAGE_VIEW_DAYS - 1));
            let rows = self.store.usage_rows(&UsageQuery::days(from, day)).await?;
            let usage = usage_section(&UsageReport::new(&rows, day, USAGE_VIEW_DAYS), |id| name_in(&fleet, id));
            (Some(fleet), users, messages, usage)
        } else {
            (None, 0, 0, String::new())
        };
        let fleet = fleet_agents.as_deref().map(|agents| Fleet {
            deployer: self.deployer.name(),
            users,
            agents,
            free_messages_today,
            usage: &fleet_usage,
        });
        let usage = self.usage_of_agents(ctx.user_id(), &agents).await?;
        let text = views::dashboard(&agents, &healthy, self.config.max_agents_per_user, plan, &usage, fleet, now);
        self.say(ctx.chat, text).await;
        Ok(())
    }

    pub(super) async fn pool(&self, ctx: &Ctx) -> Result<(), PlatformError> {
        if !self.config.is_admin(ctx.user_id()) {
            self.say(ctx.chat, Text::plain("/pool is for Baal's operators only.")).await;
            return Ok(());
        }
        if !self.config.pool_enabled {
            self.say(ctx.chat, Text::plain("The VM pool is off (POOL_ENABLED=false).")).await;
            return Ok(());
        }
        let vms = match self.store.pool_store() {
            Some(pool) => pool.pool_list().await?,
            None => Vec::new(),
        };
        self.say(ctx.chat, views::pool(&vms)).await;
        Ok(())
    }
}
