//! SeaORM entities: one module per table. Rows are converted to and from `domain` types in
//! `sql.rs`; nothing outside the store sees these.

pub(crate) mod users {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub username: Option<String>,
        pub api_key_sealed: Option<Vec<u8>>,
        pub show_tools: bool,
        pub created_at: ChronoDateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod agents {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub owner_id: i64,
        pub name: String,
        pub system_prompt: String,
        pub model: String,
        pub status: String,
        pub deleted: bool,
        pub instance_hash: Option<String>,
        pub crn_url: Option<String>,
        pub vm_url: Option<String>,
        pub vm_host: Option<String>,
        pub ssh_port: Option<i32>,
        pub ssh_host_key: Option<String>,
        pub token_sealed: Option<Vec<u8>>,
        #[sea_orm(unique)]
        pub slug: String,
        /// JSON array of tool names: one portable column on both backends.
        pub visitor_tools: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
        /// `owner` or `operator`; NULL for agents not deployed since the payer was recorded.
        pub payer: Option<String>,
        /// Set together with `lease_until`, cleared together.
        pub lease_holder: Option<String>,
        pub lease_until: Option<ChronoDateTimeUtc>,
        pub sharing: bool,
        pub daily_token_budget: Option<i64>,
        pub visitor_daily_messages: Option<i32>,
        /// The agent's `GET /usage` cursor up to which its usage is in `agent_usage`.
        pub usage_cursor: i64,
        /// The day and level of the last budget notice claimed.
        pub budget_notice_day: Option<Date>,
        pub budget_notice_level: i16,
        /// `baal` or `python` (added by M0005).
        pub runtime: String,
        /// The agent's id in the Python Baal's database, for imported agents (added by M0005).
        #[sea_orm(unique)]
        pub python_id: Option<i64>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod daily_usage {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "daily_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        pub messages: i32,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod agent_usage {
    use sea_orm::entity::prelude::*;

    /// Token counts are BIGINT, written clamped to `i64::MAX`.
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        /// A `wire::UsageCause` name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub cause: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub model: String,
        /// `owner` or `operator`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub payer: String,
        pub prompt_tokens: i64,
        pub completion_tokens: i64,
        pub calls: i64,
        pub estimated: bool,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod visitor_messages {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "visitor_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        pub messages: i32,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod retired_slugs {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "retired_slugs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub slug: String,
        pub agent_id: i64,
        pub retired_at: ChronoDateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod deployment_events {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deployment_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub agent_id: i64,
        pub step: String,
        pub outcome: String,
        pub detail: Option<String>,
        pub created_at: ChronoDateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod pool_vms {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pool_vms")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub instance_hash: Option<String>,
        pub crn_url: Option<String>,
        pub vm_url: Option<String>,
        pub vm_host: Option<String>,
        pub ssh_port: Option<i32>,
        pub ssh_host_key: Option<String>,
        pub status: String,
        pub agent_id: Option<i64>,
        pub created_at: ChronoDateTimeUtc,
        pub claimed_at: Option<ChronoDateTimeUtc>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod kv {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "kv")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub namespace: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: Vec<u8>,
        pub updated_at: ChronoDateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod seen_updates {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "seen_updates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub chat_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub update_id: i64,
        pub seen_at: ChronoDateTimeUtc,
    }

    impl ActiveModelBehavior for ActiveModel {}
}
