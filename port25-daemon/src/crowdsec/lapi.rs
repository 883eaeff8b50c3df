//! The CrowdSec Local API as port25d speaks it: the bouncer's decision stream
//! (`GET /v1/decisions/stream`, `X-Api-Key`) and the watcher's login and alerts
//! (`POST /v1/watchers/login`, `POST /v1/alerts`, a bearer token). The wire types read what the
//! LAPI really sends: `null` for an empty array (1.4.x), fields it added later ignored.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Deserializer, Serialize};

use super::reporter::Report;
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
    #[error(
        "the LAPI's answer is longer than crowdsec.max_answer_mb ({} MiB){}; refused unread",
        limit >> 20,
        declared.map_or_else(String::new, |n| format!(": it declares {n} bytes"))
    )]
    TooLarge { limit: u64, declared: Option<u64> },
}

impl LapiError {
    /// Whether the LAPI answered, but not with something port25d takes (as opposed to not
    /// answering at all).
    pub(crate) fn is_refused_answer(&self) -> bool {
        !matches!(self, LapiError::Http(_))
    }
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
    max_answer_bytes: u64,
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
            // The deadline of a whole request, answer included: a LAPI that hangs mid-answer
            // fails the poll, and the next one is a full pull.
            .timeout(Duration::from_secs(u64::from(settings.lapi_timeout)))
            .build()?;
        Ok(Self {
            http,
            url: settings.lapi_url.clone(),
            key: settings.bouncer_key.0.clone(),
            scopes: settings.scopes.clone(),
            origins: settings.origins.clone(),
            reporter: settings.reporter.clone(),
            token: None,
            max_answer_bytes: settings.bounds.max_answer_bytes,
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
            self.max_answer_bytes,
        )
        .await?;
        serde_json::from_slice(&body).map_err(|e| LapiError::Body(e.to_string()))
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
        checked(response, WATCHER_HINT, SMALL_ANSWER)
            .await
            .map(drop)
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
        let body = checked(response, WATCHER_HINT, SMALL_ANSWER).await?;
        let token: Token =
            serde_json::from_slice(&body).map_err(|e| LapiError::Body(e.to_string()))?;
        self.token = Some((token.token, Instant::now()));
        Ok(())
    }
}

/// The body of a 2xx answer, or the status and what the LAPI said; `hint` (what to check) is
/// added when the LAPI refused the credentials. A body longer than `limit` is refused as soon as
/// it is declared or read past the limit, so a hostile answer never sits in memory whole.
async fn checked(
    response: reqwest::Response,
    hint: &'static str,
    limit: u64,
) -> Result<Vec<u8>, LapiError> {
    let status = response.status();
    if status.is_success() {
        return read_bounded(response, limit).await;
    }
    let body = read_bounded(response, ERROR_BODY_READ)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    Err(LapiError::Status {
        status: status.as_u16(),
        body: crate::text::cut(body.trim(), 200),
        hint: if matches!(status.as_u16(), 401 | 403) {
            hint
        } else {
            ""
        },
    })
}

/// What is read of an error answer to quote it.
const ERROR_BODY_READ: u64 = 4096;
/// The bound on answers that carry a token or nothing.
const SMALL_ANSWER: u64 = 64 << 10;

async fn read_bounded(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, LapiError> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(LapiError::TooLarge { limit, declared });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(LapiError::TooLarge {
                limit,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The scenario port25d's alerts carry (the name it has had since the first release: fleets
/// filter on it).
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
    /// "`report.prefix` completed so many handshakes and had more SYNs rate-limited within
    /// `window` s": a ban of `ban`.
    pub(crate) fn connection_flood(
        machine: &str,
        report: &Report,
        window: u32,
        threshold: u32,
        ban: &str,
    ) -> Self {
        let prefix = report.prefix;
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
                "port25d on {machine}: {prefix} completed {} SMTP connections and had {} more rate-limited within {window} s",
                report.completed, report.dropped
            ),
            events_count: report.completed,
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
