//! `--profile`: the wire dialect a command speaks.
//!
//! busbar's own wire carries bytes, headers and busbar's RPC and actions. The other profiles
//! speak what an existing system already runs, through the dialect crates:
//!
//! * `commlib`: commlib-py's dotted names, JSON bodies (zlib inflated on arrival), its RPC
//!   and actions per transport, its node heartbeats;
//! * `celine`: CELINE's JSON objects, enriched with `created` on publish, non-JSON bodies
//!   read as `{"_raw": ...}`;
//! * `sermas`: SERMAS topic templates (`app/:appId/...`) filled from the payload and
//!   `--app-id`, payloads stamped with who sent them.
//!
//! A profile that has no such thing (RPC in CELINE, say) is refused as a usage error.

use std::fmt;

use serde_json::Value;

use crate::exit;

/// The wire dialects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// busbar's own wire: bytes, headers, busbar RPC and actions.
    #[default]
    Busbar,
    /// commlib-py: dotted names, JSON bodies, commlib RPC, actions and heartbeats.
    Commlib,
    /// CELINE's digital-twin broker: JSON objects, enriched on publish.
    Celine,
    /// SERMAS: topic templates and stamped JSON payloads.
    Sermas,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Busbar => "busbar",
            Profile::Commlib => "commlib",
            Profile::Celine => "celine",
            Profile::Sermas => "sermas",
        })
    }
}

/// `--profile` and what some profiles need besides.
#[derive(clap::Args, Debug, Clone)]
pub struct Dialect {
    /// The wire dialect: busbar, commlib (commlib-py), celine or sermas.
    #[arg(long, value_enum, default_value_t = Profile::Busbar)]
    pub profile: Profile,
    /// sermas: the application id (`appId`) stamped on payloads and filled in templates.
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,
}

/// The code clap uses for a wrong command line.
pub const USAGE: u8 = 2;

impl Dialect {
    /// A usage error: `what` is not part of this profile.
    pub fn refuse(&self, what: &str) -> anyhow::Error {
        exit::with(USAGE, format!("{what} is not part of the {} profile", self.profile))
    }

    /// The SERMAS context (needs `--app-id`).
    pub fn sermas(&self) -> anyhow::Result<busbar_sermas::SermasContext> {
        match &self.app_id {
            Some(app) => Ok(busbar_sermas::SermasContext::app(app)),
            None => Err(exit::with(USAGE, "the sermas profile needs --app-id")),
        }
    }
}

/// A body as JSON, for the profiles whose bodies are JSON.
pub fn json_body(bytes: &[u8], profile: Profile) -> anyhow::Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(bytes);
        let shown: String = text.chars().take(60).collect();
        anyhow::anyhow!("the {profile} profile sends JSON, and {shown:?} is not JSON ({e})")
    })
}
