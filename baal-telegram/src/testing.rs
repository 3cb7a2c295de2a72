//! A `Store` double for this crate's tests until the SQL store is in main: only the key-value
//! area works, the rest answers with an error. Kept here (not in baal-core's `testing`) because
//! the session is its only user.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use baal_core::domain::{
    Agent, AgentId, AgentStatus, Deployment, DeploymentEvent, NewAgent, PoolStatus, PoolVm, UsageDecision, User, UserId,
};
use baal_core::store::{AgentFilter, Store, StoreError, StoreResult, UsageRow};
use chrono::{DateTime, NaiveDate, Utc};

/// Key-value pairs in memory.
#[derive(Default)]
pub(crate) struct KvStore {
    values: Mutex<HashMap<(String, String), Vec<u8>>>,
}

fn absent<T>() -> StoreResult<T> {
    Err(StoreError::Database("not part of the key-value test double".into()))
}

#[async_trait]
impl Store for KvStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.values.lock().unwrap().get(&(namespace.to_owned(), key.to_owned())).cloned())
    }
    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.values.lock().unwrap().insert((namespace.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.values.lock().unwrap().remove(&(namespace.to_owned(), key.to_owned()));
        Ok(())
    }
    async fn user_get_or_create(&self, _id: UserId, _username: Option<&str>) -> StoreResult<User> {
        absent()
    }
    async fn user_get(&self, _id: UserId) -> StoreResult<Option<User>> {
        absent()
    }
    async fn users_list(&self) -> StoreResult<Vec<User>> {
        absent()
    }
    async fn user_set_api_key(&self, _id: UserId, _sealed: Option<Vec<u8>>) -> StoreResult<()> {
        absent()
    }
    async fn user_toggle_show_tools(&self, _id: UserId) -> StoreResult<bool> {
        absent()
    }
    async fn agent_create(&self, _agent: NewAgent) -> StoreResult<Agent> {
        absent()
    }
    async fn agent_get(&self, _id: AgentId) -> StoreResult<Option<Agent>> {
        absent()
    }
    async fn agent_by_slug(&self, _slug: &str) -> StoreResult<Option<Agent>> {
        absent()
    }
    async fn list_agents(&self, _filter: &AgentFilter) -> StoreResult<Vec<Agent>> {
        absent()
    }
    async fn count_active_agents(&self, _owner: UserId) -> StoreResult<u64> {
        absent()
    }
    async fn agent_set_status(&self, _id: AgentId, _status: AgentStatus) -> StoreResult<()> {
        absent()
    }
    async fn agent_set_deployment(&self, _id: AgentId, _deployment: &Deployment) -> StoreResult<()> {
        absent()
    }
    async fn agent_set_prompt(&self, _id: AgentId, _system_prompt: &str) -> StoreResult<()> {
        absent()
    }
    async fn agent_set_token(&self, _id: AgentId, _token_sealed: &[u8]) -> StoreResult<()> {
        absent()
    }
    async fn agent_set_visitor_tools(&self, _id: AgentId, _tools: &[String]) -> StoreResult<()> {
        absent()
    }
    async fn agent_soft_delete(&self, _id: AgentId) -> StoreResult<bool> {
        absent()
    }
    async fn usage_consume(
        &self,
        _user: UserId,
        _day: NaiveDate,
        _limit: u32,
        _resets_at: DateTime<Utc>,
    ) -> StoreResult<UsageDecision> {
        absent()
    }
    async fn usage_get(&self, _user: UserId, _day: NaiveDate) -> StoreResult<u32> {
        absent()
    }
    async fn usage_on(&self, _day: NaiveDate) -> StoreResult<Vec<UsageRow>> {
        absent()
    }
    async fn event_record(
        &self,
        _agent: AgentId,
        _step: &str,
        _outcome: &str,
        _detail: Option<&str>,
    ) -> StoreResult<DeploymentEvent> {
        absent()
    }
    async fn events_for(&self, _agent: AgentId) -> StoreResult<Vec<DeploymentEvent>> {
        absent()
    }
    async fn pool_insert(&self) -> StoreResult<PoolVm> {
        absent()
    }
    async fn pool_update(
        &self,
        _id: i64,
        _instance_hash: Option<&str>,
        _deployment: &Deployment,
        _status: PoolStatus,
    ) -> StoreResult<()> {
        absent()
    }
    async fn pool_claim(&self, _agent: AgentId) -> StoreResult<Option<PoolVm>> {
        absent()
    }
    async fn pool_set_status(&self, _id: i64, _status: PoolStatus, _agent: Option<AgentId>) -> StoreResult<()> {
        absent()
    }
    async fn pool_list(&self) -> StoreResult<Vec<PoolVm>> {
        absent()
    }
    async fn pool_remove(&self, _id: i64) -> StoreResult<()> {
        absent()
    }
}
