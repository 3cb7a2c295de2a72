//! An in-memory `Store` for the engine's tests while the SQL store is not on this branch.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::*;
use crate::store::{AgentFilter, Store, StoreError, StoreResult, UsageRow};

#[derive(Default)]
struct Data {
    users: Vec<User>,
    agents: Vec<Agent>,
    usage: HashMap<(UserId, NaiveDate), u32>,
    events: Vec<DeploymentEvent>,
    kv: HashMap<(String, String), Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct MemStore {
    data: Mutex<Data>,
}

impl MemStore {
    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        f(&mut self.data.lock().unwrap())
    }

    fn agent_mut(&self, id: AgentId, f: impl FnOnce(&mut Agent)) -> StoreResult<()> {
        self.with(|d| match d.agents.iter_mut().find(|a| a.id == id) {
            Some(agent) => {
                f(agent);
                agent.updated_at = Utc::now();
                Ok(())
            }
            None => Err(StoreError::NotFound(format!("agent {id}"))),
        })
    }
}

#[async_trait]
impl Store for MemStore {
    async fn user_get_or_create(&self, id: UserId, username: Option<&str>) -> StoreResult<User> {
        Ok(self.with(|d| {
            if let Some(user) = d.users.iter_mut().find(|u| u.id == id) {
                if username.is_some() {
                    user.username = username.map(str::to_owned);
                }
                return user.clone();
            }
            let user = User {
                id,
                username: username.map(str::to_owned),
                api_key_sealed: None,
                show_tools: true,
                created_at: Utc::now(),
            };
            d.users.push(user.clone());
            user
        }))
    }
    async fn user_get(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.with(|d| d.users.iter().find(|u| u.id == id).cloned()))
    }
    async fn users_list(&self) -> StoreResult<Vec<User>> {
        Ok(self.with(|d| d.users.clone()))
    }
    async fn user_set_api_key(&self, id: UserId, sealed: Option<Vec<u8>>) -> StoreResult<()> {
        self.with(|d| {
            let user = d.users.iter_mut().find(|u| u.id == id).ok_or(StoreError::NotFound("user".into()))?;
            user.api_key_sealed = sealed;
            Ok(())
        })
    }
    async fn user_toggle_show_tools(&self, id: UserId) -> StoreResult<bool> {
        self.with(|d| {
            let user = d.users.iter_mut().find(|u| u.id == id).ok_or(StoreError::NotFound("user".into()))?;
            user.show_tools = !user.show_tools;
            Ok(user.show_tools)
        })
    }
    async fn agent_create(&self, new: NewAgent) -> StoreResult<Agent> {
        Ok(self.with(|d| {
            let now = Utc::now();
            let agent = Agent {
                id: AgentId(d.agents.len() as i64 + 1),
                owner_id: new.owner_id,
                name: new.name,
                system_prompt: new.system_prompt,
                model: new.model,
                status: AgentStatus::Pending,
                deleted: false,
                deployment: Deployment::default(),
                token_sealed: new.token_sealed,
                slug: new.slug,
                visitor_tools: new.visitor_tools,
                created_at: now,
                updated_at: now,
            };
            d.agents.push(agent.clone());
            agent
        }))
    }
    async fn agent_get(&self, id: AgentId) -> StoreResult<Option<Agent>> {
        Ok(self.with(|d| d.agents.iter().find(|a| a.id == id).cloned()))
    }
    async fn agent_by_slug(&self, slug: &str) -> StoreResult<Option<Agent>> {
        Ok(self.with(|d| d.agents.iter().find(|a| a.slug == slug).cloned()))
    }
    async fn list_agents(&self, filter: &AgentFilter) -> StoreResult<Vec<Agent>> {
        Ok(self.with(|d| {
            d.agents
                .iter()
                .filter(|a| filter.owner.is_none_or(|o| a.owner_id == o))
                .filter(|a| filter.status.is_none_or(|s| a.status == s))
                .filter(|a| filter.include_deleted || !a.deleted)
                .cloned()
                .collect()
        }))
    }
    async fn count_active_agents(&self, owner: UserId) -> StoreResult<u64> {
        Ok(self.with(|d| d.agents.iter().filter(|a| a.owner_id == owner && !a.deleted).count() as u64))
    }
    async fn agent_set_status(&self, id: AgentId, status: AgentStatus) -> StoreResult<()> {
        self.agent_mut(id, |a| a.status = status)
    }
    async fn agent_set_deployment(&self, id: AgentId, deployment: &Deployment) -> StoreResult<()> {
        self.agent_mut(id, |a| a.deployment = deployment.clone())
    }
    async fn agent_set_prompt(&self, id: AgentId, system_prompt: &str) -> StoreResult<()> {
        self.agent_mut(id, |a| a.system_prompt = system_prompt.to_owned())
    }
    async fn agent_set_token(&self, id: AgentId, token_sealed: &[u8]) -> StoreResult<()> {
        self.agent_mut(id, |a| a.token_sealed = Some(token_sealed.to_vec()))
    }
    async fn agent_set_visitor_tools(&self, id: AgentId, tools: &[String]) -> StoreResult<()> {
        self.agent_mut(id, |a| a.visitor_tools = tools.to_vec())
    }
    async fn agent_soft_delete(&self, id: AgentId) -> StoreResult<bool> {
        Ok(self.with(|d| match d.agents.iter_mut().find(|a| a.id == id && !a.deleted) {
            Some(a) => {
                a.deleted = true;
                a.status = AgentStatus::Stopped;
                true
            }
            None => false,
        }))
    }
    async fn usage_consume(
        &self,
        user: UserId,
        day: NaiveDate,
        limit: u32,
        resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision> {
        Ok(self.with(|d| {
            let used = d.usage.entry((user, day)).or_default();
            if *used >= limit {
                UsageDecision::Refused { used: *used, limit, resets_at }
            } else {
                *used += 1;
                UsageDecision::Allowed { used: *used, limit }
            }
        }))
    }
    async fn usage_get(&self, user: UserId, day: NaiveDate) -> StoreResult<u32> {
        Ok(self.with(|d| d.usage.get(&(user, day)).copied().unwrap_or(0)))
    }
    async fn usage_on(&self, day: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        Ok(self.with(|d| {
            d.usage
                .iter()
                .filter(|((_, dd), _)| *dd == day)
                .map(|((u, dd), m)| UsageRow { user_id: *u, day: *dd, messages: *m })
                .collect()
        }))
    }
    async fn event_record(
        &self,
        agent: AgentId,
        step: &str,
        outcome: &str,
        detail: Option<&str>,
    ) -> StoreResult<DeploymentEvent> {
        Ok(self.with(|d| {
            let event = DeploymentEvent {
                id: d.events.len() as i64 + 1,
                agent_id: agent,
                step: step.into(),
                outcome: outcome.into(),
                detail: detail.map(str::to_owned),
                created_at: Utc::now(),
            };
            d.events.push(event.clone());
            event
        }))
    }
    async fn events_for(&self, agent: AgentId) -> StoreResult<Vec<DeploymentEvent>> {
        Ok(self.with(|d| d.events.iter().filter(|e| e.agent_id == agent).cloned().collect()))
    }
    async fn pool_insert(&self) -> StoreResult<PoolVm> {
        Err(StoreError::Database("no pool in tests".into()))
    }
    async fn pool_update(&self, _: i64, _: Option<&str>, _: &Deployment, _: PoolStatus) -> StoreResult<()> {
        Ok(())
    }
    async fn pool_claim(&self, _: AgentId) -> StoreResult<Option<PoolVm>> {
        Ok(None)
    }
    async fn pool_set_status(&self, _: i64, _: PoolStatus, _: Option<AgentId>) -> StoreResult<()> {
        Ok(())
    }
    async fn pool_list(&self) -> StoreResult<Vec<PoolVm>> {
        Ok(Vec::new())
    }
    async fn pool_remove(&self, _: i64) -> StoreResult<()> {
        Ok(())
    }
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|d| d.kv.get(&(namespace.into(), key.into())).cloned()))
    }
    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.with(|d| d.kv.insert((namespace.into(), key.into()), value.to_vec()));
        Ok(())
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.with(|d| d.kv.remove(&(namespace.into(), key.into())));
        Ok(())
    }
}
