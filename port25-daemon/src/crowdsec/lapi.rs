//! The CrowdSec Local API as port25d speaks it: the bouncer's decision stream
//! (`GET /v1/decisions/stream`, `X-Api-Key`) and the watcher's login and alerts
//! (`POST /v1/watchers/login`, `POST /v1/alerts`, a bearer token). The wire types read what the
//! LAPI really sends: `null` for an empty array (1.4.x), fields it added later ignored.

use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{Crowdsec, Reporter};

/// One poll's answer.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Stream {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub new: Vec<Decision>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub deleted: Vec<Decision>,
}

/// A decision as the stream carries it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Decision {
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub value: String,
    /// Time left, a Go duration ("3h59m59.57s"; negative once over).
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

fn null_is_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Why a call failed, in words for the log and `status`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LapiError {
    #[error("{0}")]
    Http(String),
    #[error("the LAPI answered {status}: {body}{hint}")]
    Status {
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error("the LAPI's answer is not what port25d expects: {0}")]
    Body(String),
}

impl From<reqwest::Error> for LapiError {
    fn from(err: reqwest::Error) -> Self {
        // reqwest's Display stops at the outermost layer ("error sending request"); the cause
        // (connection refused, certificate unknown) is what the operator needs.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        LapiError::Http(text)
    }
}

/// An HTTP client of one LAPI with the bouncer key and, for the reporter, the watcher's token.
pub(crate) struct Lapi {
    http: reqwest::Client,
    url: String,
    key: String,
    scopes: Vec<String>,
    origins: Vec<String>,
    reporter: Option<Reporter>,
    token: Option<(String, Instant)>,
}

const WATCHER_HINT: &str =
    "; check crowdsec.machine_id and machine_password_file against `cscli machines list`";

/// The watcher's token is good for an hour; a new one is asked for before that.
const TOKEN_LIFE: Duration = Duration::from_secs(45 * 60);

impl Lapi {
    pub(crate) fn new(settings: &Crowdsec) -> Result<Self, LapiError> {
        // One process-wide TLS provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("port25d/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            url: settings.lapi_url.clone(),
            key: settings.bouncer_key.0.clone(),
            scopes: settings.scopes.clone(),
            origins: settings.origins.clone(),
            reporter: settings.reporter.clone(),
            token: None,
        })
    }

    /// The decisions since the last poll of this key, or all active ones (`startup`). The LAPI
    /// filters by scope and origin itself, so that its per-value bookkeeping (see
    /// `decisions::CrowdsecList::apply`) is about the decisions port25d enforces.
    pub(crate) async fn stream(&self, startup: bool) -> Result<Stream, LapiError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/decisions/stream", self.url))
            .map_err(|e| LapiError::Http(format!("{}: {e}", self.url)))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("startup", if startup { "true" } else { "false" });
            query.append_pair("scopes", &self.scopes.join(","));
            if !self.origins.is_empty() {
                query.append_pair("origins", &self.origins.join(","));
            }
        }
        let response = self
            .http
            .get(url)
            .header("X-Api-Key", &self.key)
            .send()
            .await?;
        let body = checked(
            response,
            "; check crowdsec.bouncer_key_file against `cscli bouncers list`",
        )
        .await?;
        serde_json::from_str(&body).map_err(|e| LapiError::Body(e.to_string()))
    }

    /// Pushes one alert with its ban decision; logs in first when the token is missing or old.
    pub(crate) async fn push_alert(&mut self, alert: &Alert) -> Result<(), LapiError> {
        if self
            .token
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > TOKEN_LIFE)
        {
            self.login().await?;
        }
        let Some((token, _)) = &self.token else {
            return Err(LapiError::Http("no watcher token".into()));
        };
        let response = self
            .http
            .post(format!("{}/v1/alerts", self.url))
            .bearer_auth(token)
            .json(&[alert])
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // The LAPI restarted with a new secret: log in again next time.
            self.token = None;
        }
        checked(response, WATCHER_HINT).await.map(drop)
    }

    async fn login(&mut self) -> Result<(), LapiError> {
        let Some(reporter) = &self.reporter else {
            return Err(LapiError::Http(
                "no watcher credentials (crowdsec.machine_id)".into(),
            ));
        };
        #[derive(Serialize)]
        struct Login<'a> {
            machine_id: &'a str,
            password: &'a str,
            scenarios: [&'a str; 1],
        }
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let response = self
            .http
            .post(format!("{}/v1/watchers/login", self.url))
            .json(&Login {
                machine_id: &reporter.machine_id,
                password: &reporter.password.0,
                scenarios: [SCENARIO],
            })
            .send()
            .await?;
        let body = checked(response, WATCHER_HINT).await?;
        let token: Token =
            serde_json::from_str(&body).map_err(|e| LapiError::Body(e.to_string()))?;
        self.token = Some((token.token, Instant::now()));
        Ok(())
    }
}

/// The body of a 2xx answer, or the status and what the LAPI said; `hint` (what to check) is
/// added when the LAPI refused the credentials.
async fn checked(response: reqwest::Response, hint: &'static str) -> Result<String, LapiError> {
    let status = response.status();
    let body = response.text().await?;
    if status.is_success() {
        return Ok(body);
    }
    let mut body = body.trim().to_owned();
    body.truncate(200);
    Err(LapiError::Status {
        status: status.as_u16(),
        body,
        hint: if matches!(status.as_u16(), 401 | 403) {
            hint
        } else {
            ""
        },
    })
}

/// The scenario port25d's alerts carry.
pub(crate) const SCENARIO: &str = "port25/syn-flood";

/// An alert as `POST /v1/alerts` takes it (the fields the LAPI requires), with one ban decision.
#[derive(Debug, Serialize)]
pub(crate) struct Alert {
    scenario: &'static str,
    scenario_hash: &'static str,
    scenario_version: &'static str,
    message: String,
    events_count: u64,
    capacity: u64,
    leakspeed: String,
    simulated: bool,
    start_at: String,
    stop_at: String,
    events: [(); 0],
    source: AlertSource,
    decisions: [AlertDecision; 1],
}

#[derive(Debug, Serialize)]
struct AlertSource {
    scope: &'static str,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<String>,
}

#[derive(Debug, Serialize)]
struct AlertDecision {
    duration: String,
    origin: &'static str,
    scenario: &'static str,
    scope: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: String,
}

impl Alert {
    /// "`prefix` had `dropped` SYNs rate-limited within `window` s": a ban of `ban`.
    pub(crate) fn syn_flood(
        machine: &str,
        prefix: IpNet,
        dropped: u64,
        window: u32,
        threshold: u32,
        ban: &str,
    ) -> Self {
        let single = prefix.prefix_len() == prefix.max_prefix_len();
        let (scope, value) = if single {
            ("Ip", prefix.addr().to_string())
        } else {
            ("Range", prefix.to_string())
        };
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        Alert {
            scenario: SCENARIO,
            scenario_hash: "",
            scenario_version: env!("CARGO_PKG_VERSION"),
            message: format!(
                "port25d on {machine}: {prefix} had {dropped} new SMTP connections rate-limited within {window} s"
            ),
            events_count: dropped,
            capacity: u64::from(threshold),
            leakspeed: format!("{window}s"),
            simulated: false,
            start_at: now.clone(),
            stop_at: now,
            events: [],
            source: AlertSource {
                scope,
                value: value.clone(),
                ip: single.then(|| value.clone()),
                range: (!single).then(|| value.clone()),
            },
            decisions: [AlertDecision {
                duration: ban.to_owned(),
                origin: "crowdsec",
                scenario: SCENARIO,
                scope,
                kind: "ban",
                value,
            }],
        }
    }
}
