//! Server settings: command-line flags, `WHARF_*` environment variables and the TOML file given
//! by `--config`, merged in that order of precedence (flag > environment > file > default).
//!
//! clap reads a flag and its environment variable as one value, so every setting is an
//! `Option` there; the file fills what is still unset, then the defaults.
//!
//! SQS credentials are the exception: they have no flag, because a flag's value shows in `ps`
//! to every user of the machine. They come from `WHARF_CREDENTIALS` or the file's
//! `[credentials]` table; when the variable is set (and not empty) it replaces the table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use wharf_amqp::{AmqpConfig, PermissionSpec, UserSpec, Users};
use wharf_core::settings::{Overflow, QueueKind, QueueSettings, RedrivePolicy};
use wharf_sqs::{Credentials, SqsConfig};
use wharf_store::FsyncMode;

pub const DEFAULT_DATA_DIR: &str = "./wharf-data";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15672";
pub const DEFAULT_HTTP: &str = "127.0.0.1:9324";
pub const DEFAULT_AMQP: &str = "127.0.0.1:5672";
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 100;
/// An hour: a longer ban on reusing a queue name is surely a typo.
pub const MAX_RECREATE_DELAY_SECS: u64 = 3600;
/// `AKID1:secret1,AKID2:secret2`: SQS access keys that may sign requests.
pub const CREDENTIALS_ENV: &str = "WHARF_CREDENTIALS";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncArg {
    /// fdatasync before every confirm (group commit): nothing accepted is lost, even on power cut.
    Always,
    /// Confirm once written to the OS; fdatasync every `fsync_interval_ms`.
    Interval,
    /// Confirm once written to the OS; never fdatasync.
    Never,
}

/// `wharf serve` flags. Front ends that are not built yet have no flag here on purpose.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with settings and the queues and exchanges to declare at start.
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where messages and definitions are stored [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep everything in memory: nothing touches the disk, nothing survives a restart.
    #[arg(long, env = "WHARF_IN_MEMORY", num_args = 0..=1, default_missing_value = "true")]
    pub in_memory: Option<bool>,
    /// When accepted messages are forced to disk [default: always].
    #[arg(long, env = "WHARF_FSYNC", value_enum)]
    pub fsync: Option<FsyncArg>,
    /// Sync period for `--fsync interval`, in milliseconds [default: 100].
    #[arg(long, env = "WHARF_FSYNC_INTERVAL_MS", value_name = "MS")]
    pub fsync_interval_ms: Option<u64>,
    /// With `--fsync always`: after a group commit shared by several writes, wait this
    /// percentage (0-100) of that sync's time, at most 1 ms, for more writes to join the next
    /// one. Fewer syncs, less CPU per write, that much more latency; an error with any other
    /// fsync mode or in memory [default: 0, never wait].
    #[arg(long, env = "WHARF_GROUP_COMMIT_WAIT_PERCENT", value_name = "PERCENT")]
    pub group_commit_wait_percent: Option<u32>,
    /// Admin listener: /health and /metrics [default: 127.0.0.1:15672].
    #[arg(long, env = "WHARF_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Amazon SQS API listener (AWS JSON 1.0 and Query) [default: 127.0.0.1:9324].
    #[arg(long, env = "WHARF_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// AMQP 0-9-1 listener (RabbitMQ's protocol) [default: 127.0.0.1:5672].
    #[arg(long, env = "WHARF_AMQP", value_name = "ADDR")]
    pub amqp: Option<SocketAddr>,
    /// AMQP heartbeat offered to clients, in seconds; 0 disables [default: 60].
    #[arg(long, env = "WHARF_AMQP_HEARTBEAT", value_name = "SECONDS")]
    pub amqp_heartbeat: Option<u16>,
    /// Time an AMQP client has from connecting to connection.open, in ms [default: 10000].
    #[arg(long, env = "WHARF_AMQP_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    pub amqp_handshake_timeout_ms: Option<u64>,
    /// How long an AMQP delivery may stay unacked before its channel is closed (406), in ms;
    /// 0 disables [default: 1800000, 30 minutes].
    #[arg(long, env = "WHARF_AMQP_CONSUMER_TIMEOUT_MS", value_name = "MS")]
    pub amqp_consumer_timeout_ms: Option<u64>,
    /// Total bytes of queued messages above which AMQP publishers are blocked
    /// (connection.blocked) until it falls below 90% [default: 40% of physical memory].
    #[arg(long, env = "WHARF_QUEUED_BYTES_HIGH_WATERMARK", value_name = "BYTES")]
    pub queued_bytes_high_watermark: Option<u64>,
    /// Account id in SQS queue URLs and ARNs [default: 000000000000].
    #[arg(long, env = "WHARF_ACCOUNT_ID", value_name = "ID")]
    pub account_id: Option<String>,
    /// Region in ARNs [default: us-east-1].
    #[arg(long, env = "WHARF_REGION")]
    pub region: Option<String>,
    /// Seconds after an SQS DeleteQueue before the name may be created again (AWS's
    /// QueueDeletedRecently rule: 60); 0 lets suites recreate queues at once [default: 0].
    #[arg(long, env = "WHARF_SQS_RECREATE_DELAY", value_name = "SECONDS")]
    pub sqs_recreate_delay: Option<u64>,
    /// Base URL SNS writes into SubscribeURL, UnsubscribeURL and SigningCertURL: how HTTP
    /// endpoints reach this server [default: http://<--http address>].
    #[arg(long, env = "WHARF_SNS_PUBLIC_URL", value_name = "URL")]
    pub sns_public_url: Option<String>,
    /// SMTP relay (HOST:PORT, plain SMTP, no authentication) for SNS email subscriptions;
    /// without one, email subscriptions are refused [default: none].
    #[arg(long, env = "WHARF_SNS_SMTP_RELAY", value_name = "HOST:PORT")]
    pub sns_smtp_relay: Option<String>,
    /// From address of SNS email [default: no-reply@sns.wharf.local].
    #[arg(long, env = "WHARF_SNS_EMAIL_FROM", value_name = "ADDRESS")]
    pub sns_email_from: Option<String>,
    /// PEM file of CA certificates SNS trusts for https endpoints, besides the system's roots
    /// (a private CA, or a test endpoint's self-signed certificate) [default: none].
    #[arg(long, env = "WHARF_SNS_HTTPS_CA_FILE", value_name = "PATH")]
    pub sns_https_ca_file: Option<PathBuf>,
}

/// The config file. Unknown keys are errors: a typo must not be silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub in_memory: Option<bool>,
    pub fsync: Option<FsyncArg>,
    pub fsync_interval_ms: Option<u64>,
    pub group_commit_wait_percent: Option<u32>,
    pub admin: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub amqp: Option<SocketAddr>,
    pub amqp_heartbeat: Option<u16>,
    pub amqp_handshake_timeout_ms: Option<u64>,
    pub amqp_consumer_timeout_ms: Option<u64>,
    pub queued_bytes_high_watermark: Option<u64>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub sqs_recreate_delay: Option<u64>,
    pub sns_public_url: Option<String>,
    pub sns_smtp_relay: Option<String>,
    pub sns_email_from: Option<String>,
    pub sns_https_ca_file: Option<PathBuf>,
    /// `[credentials]`: access key id = "secret access key". Any keys at all make SigV4
    /// required on the SQS listener.
    pub credentials: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "queue")]
    pub queues: Vec<QueueDecl>,
    #[serde(default, rename = "exchange")]
    pub exchanges: Vec<ExchangeDecl>,
    #[serde(default, rename = "binding")]
    pub bindings: Vec<BindingDecl>,
    /// `[[vhost]]`: vhosts that exist from start (`/` always does).
    #[serde(default, rename = "vhost")]
    pub vhosts: Vec<VhostDecl>,
    /// `[[user]]`: AMQP users. Any at all replace the built-in guest/guest.
    #[serde(default, rename = "user")]
    pub users: Vec<UserDecl>,
    /// `[[permission]]`: what a user may do in a vhost.
    #[serde(default, rename = "permission")]
    pub permissions: Vec<PermissionDecl>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostDecl {
    pub name: String,
}

/// `[[user]]`: `password` (plain text in the file) or `password_hash` (RabbitMQ's SHA-256
/// form, as `wharf hash-password` or `rabbitmqctl export_definitions` print it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDecl {
    pub name: String,
    pub password: Option<String>,
    pub password_hash: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `[[permission]]`: regular expressions over resource names, as in RabbitMQ; "" allows nothing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionDecl {
    pub user: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// `[[queue]]`: a queue that exists from start. Durations are in seconds unless the name says
/// otherwise, as in SQS; omitted settings take the engine's defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDecl {
    pub name: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// "standard" (default) or "fifo".
    #[serde(default)]
    pub kind: QueueKindDecl,
    #[serde(default = "yes")]
    pub durable: bool,
    pub visibility_timeout: Option<u64>,
    pub delay: Option<u64>,
    pub retention: Option<u64>,
    pub max_message_size: Option<usize>,
    pub receive_wait: Option<u64>,
    pub content_based_deduplication: Option<bool>,
    /// Name of the dead-letter queue (same vhost) and the receive count that sends a message there.
    pub dead_letter_queue: Option<String>,
    pub max_receive_count: Option<u32>,
    pub message_ttl_ms: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    /// "drop-head" (default), "reject-publish" or "reject-publish-dlx".
    pub overflow: Option<String>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKindDecl {
    #[default]
    Standard,
    Fifo,
}

/// `[[exchange]]`: an exchange (an SNS topic is one) that exists from start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDecl {
    pub name: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// direct, fanout, topic, headers or x-consistent-hash.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
}

/// `[[binding]]`: routes messages from an exchange to a queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDecl {
    pub exchange: String,
    pub queue: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
}

fn default_vhost() -> String {
    "/".to_owned()
}

fn yes() -> bool {
    true
}

/// Storage as resolved from every source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Memory,
    Disk {
        dir: PathBuf,
        fsync: FsyncMode,
        /// See `FileStoreOptions::group_commit_wait_percent`.
        group_commit_wait_percent: u32,
    },
}

/// The fully resolved settings `serve` runs with.
#[derive(Debug)]
pub struct Settings {
    pub storage: Storage,
    pub admin: SocketAddr,
    pub http: SocketAddr,
    pub amqp: SocketAddr,
    pub amqp_config: AmqpConfig,
    pub sqs: SqsConfig,
    /// SNS: the public base URL if configured (else derived from the HTTP listener's
    /// address at start), and the SMTP relay for email subscriptions.
    pub sns_public_url: Option<String>,
    pub sns_smtp: Option<wharf_sns::SmtpConfig>,
    pub sns_https_ca_file: Option<PathBuf>,
    pub queues: Vec<QueueDecl>,
    pub exchanges: Vec<ExchangeDecl>,
    pub bindings: Vec<BindingDecl>,
    pub vhosts: Vec<String>,
}

/// Physical memory in bytes, for defaults that follow the machine (RabbitMQ's 40% watermark).
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) =
        unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
}

impl Settings {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
        Self::resolve_with_env(args, std::env::var(CREDENTIALS_ENV).ok())
    }

    /// `resolve`, with the value of `WHARF_CREDENTIALS` given (tests must not share the
    /// process environment).
    pub fn resolve_with_env(args: ServeArgs, credentials_env: Option<String>) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => ConfigFile::default(),
        };
        let in_memory = args.in_memory.or(file.in_memory).unwrap_or(false);
        let fsync = args.fsync.or(file.fsync).unwrap_or(FsyncArg::Always);
        let interval_ms =
            args.fsync_interval_ms.or(file.fsync_interval_ms).unwrap_or(DEFAULT_FSYNC_INTERVAL_MS);
        if interval_ms == 0 {
            bail!("fsync interval must be at least 1 ms");
        }
        let group_commit_wait_percent =
            args.group_commit_wait_percent.or(file.group_commit_wait_percent).unwrap_or(0);
        if group_commit_wait_percent > 100 {
            bail!("group commit wait must be 0-100 (percent of a sync), not {group_commit_wait_percent}");
        }
        if group_commit_wait_percent > 0 && (in_memory || fsync != FsyncArg::Always) {
            bail!("a group commit wait applies only to durable storage with fsync always");
        }
        let storage = if in_memory {
            Storage::Memory
        } else {
            let dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let fsync = match fsync {
                FsyncArg::Always => FsyncMode::Always,
                FsyncArg::Interval => FsyncMode::Interval(Duration::from_millis(interval_ms)),
                FsyncArg::Never => FsyncMode::Never,
            };
            Storage::Disk { dir, fsync, group_commit_wait_percent }
        };
        let admin = match args.admin.or(file.admin) {
            Some(addr) => addr,
            None => DEFAULT_ADMIN.parse().context("default admin address")?,
        };
        let http = match args.http.or(file.http) {
            Some(addr) => addr,
            None => DEFAULT_HTTP.parse().context("default HTTP address")?,
        };
        let amqp = match args.amqp.or(file.amqp) {
            Some(addr) => addr,
            None => DEFAULT_AMQP.parse().context("default AMQP address")?,
        };
        let mut amqp_config = AmqpConfig::default();
        match args.amqp_consumer_timeout_ms.or(file.amqp_consumer_timeout_ms) {
            Some(0) => amqp_config.consumer_timeout = None,
            Some(ms) => amqp_config.consumer_timeout = Some(Duration::from_millis(ms)),
            None => {}
        }
        amqp_config.queued_bytes_high_watermark =
            match args.queued_bytes_high_watermark.or(file.queued_bytes_high_watermark) {
                Some(0) => bail!("the queued bytes high watermark must be at least 1 byte"),
                Some(bytes) => Some(bytes),
                None => physical_memory().map(|total| total / 10 * 4),
            };
        if !file.users.is_empty() || !file.permissions.is_empty() {
            let users = file.users.iter().map(|u| UserSpec {
                name: u.name.clone(),
                password: u.password.clone(),
                password_hash: u.password_hash.clone(),
                tags: u.tags.clone(),
            });
            let permissions = file.permissions.iter().map(|p| PermissionSpec {
                user: p.user.clone(),
                vhost: p.vhost.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            });
            amqp_config.users = Users::new(users.collect(), permissions.collect())
                .map_err(|e| anyhow::anyhow!("config file: {e}"))?;
        }
        if let Some(heartbeat) = args.amqp_heartbeat.or(file.amqp_heartbeat) {
            amqp_config.heartbeat = heartbeat;
        }
        match args.amqp_handshake_timeout_ms.or(file.amqp_handshake_timeout_ms) {
            Some(0) => bail!("AMQP handshake timeout must be at least 1 ms"),
            Some(ms) => amqp_config.handshake_timeout = Duration::from_millis(ms),
            None => {}
        }
        let account_id = args.account_id.or(file.account_id).unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("account id '{account_id}' must be 12 digits, as AWS account ids are");
        }
        let region = args.region.or(file.region).unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.is_empty()
            || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("region '{region}' must be lowercase letters, digits and '-' (like us-east-1)");
        }
        // An empty variable is ignored rather than taken as "no keys": that would silently
        // open a server whose file asks for authentication.
        let credentials = match credentials_env.filter(|v| !v.trim().is_empty()) {
            Some(text) => parse_credentials_env(&text)?,
            None => check_credentials(file.credentials.unwrap_or_default(), "[credentials]")?,
        };
        let defaults = SqsConfig::default();
        let recreate_delay_ms = match args.sqs_recreate_delay.or(file.sqs_recreate_delay) {
            Some(seconds) if seconds > MAX_RECREATE_DELAY_SECS => {
                bail!("sqs recreate delay {seconds} s is above the maximum of {MAX_RECREATE_DELAY_SECS} s")
            }
            Some(seconds) => seconds * 1000,
            None => defaults.recreate_delay_ms,
        };
        let sqs = SqsConfig { account_id, region, credentials, recreate_delay_ms, ..defaults };
        let sns_public_url = match args.sns_public_url.or(file.sns_public_url) {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                bail!("SNS public URL '{url}' must start with http:// or https://")
            }
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None => None,
        };
        let sns_smtp = match args.sns_smtp_relay.or(file.sns_smtp_relay) {
            Some(relay) => {
                let port_ok =
                    relay.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !port_ok {
                    bail!("SNS SMTP relay '{relay}' must be HOST:PORT");
                }
                let from = args
                    .sns_email_from
                    .or(file.sns_email_from)
                    .unwrap_or_else(|| "no-reply@sns.wharf.local".to_owned());
                if !from.contains('@') {
                    bail!("SNS email From address '{from}' is not an email address");
                }
                Some(wharf_sns::SmtpConfig { relay, from })
            }
            None => None,
        };
        // Check declarations now, before anything is opened or bound: a bad file fails fast.
        for queue in &file.queues {
            queue.to_settings()?;
        }
        Ok(Settings {
            storage,
            admin,
            http,
            amqp,
            amqp_config,
            sqs,
            sns_public_url,
            sns_smtp,
            sns_https_ca_file: args.sns_https_ca_file.or(file.sns_https_ca_file),
            queues: file.queues,
            exchanges: file.exchanges,
            bindings: file.bindings,
            vhosts: file.vhosts.into_iter().map(|v| v.name).collect(),
        })
    }
}

/// `AKID1:secret1,AKID2:secret2`. Entries are split at their first `:` (secrets may hold
/// one), so a secret cannot contain `,`; the file form has no such limit.
fn parse_credentials_env(text: &str) -> anyhow::Result<Credentials> {
    let mut keys = BTreeMap::new();
    for (i, entry) in text.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let Some((id, secret)) = entry.split_once(':') else {
            // The entry itself may be a secret pasted alone: say where, never what.
            bail!("{CREDENTIALS_ENV}: entry {} is not ACCESS_KEY_ID:SECRET", i + 1);
        };
        if keys.insert(id.trim().to_owned(), secret.trim().to_owned()).is_some() {
            bail!("{CREDENTIALS_ENV}: access key id '{}' is given twice", id.trim());
        }
    }
    check_credentials(keys, CREDENTIALS_ENV)
}

fn check_credentials(keys: BTreeMap<String, String>, source: &str) -> anyhow::Result<Credentials> {
    for (id, secret) in &keys {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b',' && b != b':') {
            bail!("{source}: access key id '{id}' must be printable ASCII without '/', ',' or ':'");
        }
        if secret.is_empty() {
            bail!("{source}: access key id '{id}' has an empty secret");
        }
    }
    Ok(Credentials::new(keys))
}

fn load_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines (it quotes the offending line); one is enough.
        let first = e.message().lines().next().unwrap_or("invalid TOML").to_owned();
        match e.span() {
            Some(span) => {
                let line =
                    text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1;
                anyhow::anyhow!("config file {} line {line}: {first}", path.display())
            }
            None => anyhow::anyhow!("config file {}: {first}", path.display()),
        }
    })
}

impl QueueDecl {
    /// The engine settings this declaration asks for. Ranges follow SQS, whose attribute names
    /// these keys mirror; a value out of range is an error naming the queue and the key.
    pub fn to_settings(&self) -> anyhow::Result<QueueSettings> {
        let name = &self.name;
        let in_range = |key: &str, value: u64, min: u64, max: u64| -> anyhow::Result<u64> {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                bail!("queue '{name}': {key} = {value} is outside {min}..={max}")
            }
        };
        let is_fifo = self.kind == QueueKindDecl::Fifo;
        if is_fifo != name.ends_with(".fifo") {
            bail!("queue '{name}': a FIFO queue's name must end in .fifo, and only a FIFO queue's may");
        }
        let mut s = QueueSettings {
            kind: if is_fifo { QueueKind::Fifo } else { QueueKind::Standard },
            durable: self.durable,
            ..QueueSettings::default()
        };
        if let Some(v) = self.visibility_timeout {
            s.visibility_timeout_ms = in_range("visibility_timeout", v, 0, 43_200)? * 1000;
        }
        if let Some(v) = self.delay {
            s.delay_ms = in_range("delay", v, 0, 900)? * 1000;
        }
        if let Some(v) = self.retention {
            s.retention_ms = in_range("retention", v, 60, 1_209_600)? * 1000;
        }
        if let Some(v) = self.max_message_size {
            s.max_message_size = in_range("max_message_size", v as u64, 1024, 1_048_576)? as u32;
        }
        if let Some(v) = self.receive_wait {
            s.receive_wait_ms = in_range("receive_wait", v, 0, 20)? * 1000;
        }
        if let Some(v) = self.content_based_deduplication {
            s.content_based_dedup = v;
        }
        s.redrive = match (&self.dead_letter_queue, self.max_receive_count) {
            (Some(dlq), Some(max)) => Some(RedrivePolicy {
                dead_letter_queue: dlq.clone(),
                max_receive_count: in_range("max_receive_count", u64::from(max), 1, 1000)? as u32,
            }),
            (None, None) => None,
            _ => bail!("queue '{name}': dead_letter_queue and max_receive_count go together"),
        };
        s.message_ttl_ms = self.message_ttl_ms;
        s.max_length = self.max_length;
        s.max_length_bytes = self.max_length_bytes;
        s.overflow = match self.overflow.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(other) => bail!(
                "queue '{name}': overflow = '{other}' is not one of drop-head, reject-publish, reject-publish-dlx"
            ),
        };
        s.dead_letter_exchange = self.dead_letter_exchange.clone();
        s.dead_letter_routing_key = self.dead_letter_routing_key.clone();
        if let Some(p) = self.max_priority {
            s.max_priority = Some(in_range("max_priority", u64::from(p), 1, 255)? as u8);
        }
        s.validate().map_err(|e| anyhow::anyhow!("queue '{name}': {e}"))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(ServeArgs::default()).unwrap();
        assert_eq!(
            s.storage,
            Storage::Disk {
                dir: DEFAULT_DATA_DIR.into(),
                fsync: FsyncMode::Always,
                group_commit_wait_percent: 0
            }
        );
        assert_eq!(s.admin.to_string(), DEFAULT_ADMIN);
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let file = write(
            r#"
            data_dir = "/from/file"
            fsync = "interval"
            fsync_interval_ms = 250
            admin = "127.0.0.1:9999"

            [[queue]]
            name = "orders.fifo"
            kind = "fifo"
            visibility_timeout = 60
            content_based_deduplication = true

            [[exchange]]
            name = "events"
            type = "fanout"

            [[binding]]
            exchange = "events"
            queue = "orders.fifo"
            "#,
        );
        let args = ServeArgs {
            config: Some(file.path().into()),
            admin: Some("127.0.0.1:1234".parse().unwrap()),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(
            s.storage,
            Storage::Disk {
                dir: "/from/file".into(),
                fsync: FsyncMode::Interval(Duration::from_millis(250)),
                group_commit_wait_percent: 0,
            }
        );
        assert_eq!(s.admin.port(), 1234);
        assert_eq!(s.queues[0].kind, QueueKindDecl::Fifo);
        assert_eq!(s.queues[0].visibility_timeout, Some(60));
        assert_eq!(s.exchanges[0].kind, "fanout");
        assert_eq!(s.bindings[0].vhost, "/");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_line() {
        let file = write("data_dir = \"x\"\nfsinc = \"always\"\n");
        let args = ServeArgs { config: Some(file.path().into()), ..ServeArgs::default() };
        let err = Settings::resolve(args).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("fsinc"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn sqs_recreate_delay_from_file_in_seconds_and_bounded() {
        assert_eq!(Settings::resolve(ServeArgs::default()).unwrap().sqs.recreate_delay_ms, 0);
        let file = write("sqs_recreate_delay = 60\n");
        let args = ServeArgs { config: Some(file.path().into()), ..ServeArgs::default() };
        assert_eq!(Settings::resolve(args).unwrap().sqs.recreate_delay_ms, 60_000);
        let args = ServeArgs { sqs_recreate_delay: Some(3601), ..ServeArgs::default() };
        let err = Settings::resolve(args).unwrap_err().to_string();
        assert!(err.contains("above the maximum of 3600 s"), "{err}");
    }

    #[test]
    fn group_commit_wait_is_a_percentage_of_a_sync() {
        let args = ServeArgs { group_commit_wait_percent: Some(101), ..ServeArgs::default() };
        let err = Settings::resolve(args).unwrap_err().to_string();
        assert!(err.contains("group commit wait must be 0-100"), "{err}");
        let args = ServeArgs { group_commit_wait_percent: Some(50), ..ServeArgs::default() };
        let s = Settings::resolve(args).unwrap();
        assert!(matches!(s.storage, Storage::Disk { group_commit_wait_percent: 50, .. }));
        let file = write("group_commit_wait_percent = 30\n");
        let args = ServeArgs { config: Some(file.path().into()), ..ServeArgs::default() };
        let s = Settings::resolve(args).unwrap();
        assert!(matches!(s.storage, Storage::Disk { group_commit_wait_percent: 30, .. }));
        // Where there are no group commits, asking for a wait is a mistake, not a no-op.
        for args in [
            ServeArgs {
                group_commit_wait_percent: Some(50),
                fsync: Some(FsyncArg::Never),
                ..ServeArgs::default()
            },
            ServeArgs { group_commit_wait_percent: Some(50), in_memory: Some(true), ..ServeArgs::default() },
        ] {
            let err = Settings::resolve(args).unwrap_err().to_string();
            assert!(err.contains("applies only to durable storage with fsync always"), "{err}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let args = ServeArgs { config: Some("/no/such/wharf.toml".into()), ..ServeArgs::default() };
        let err = Settings::resolve(args).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read config file /no/such/wharf.toml"));
    }

    #[test]
    fn queue_declarations_map_to_engine_settings() {
        let decl: QueueDecl = toml::from_str(
            "name = 'jobs'\nvisibility_timeout = 60\ndead_letter_queue = 'dlq'\nmax_receive_count = 3\noverflow = 'reject-publish'",
        )
        .unwrap();
        let s = decl.to_settings().unwrap();
        assert_eq!(s.visibility_timeout_ms, 60_000);
        assert_eq!(s.redrive, Some(RedrivePolicy { dead_letter_queue: "dlq".into(), max_receive_count: 3 }));
        assert_eq!(s.overflow, Overflow::RejectPublish);
        assert!(s.durable);

        let err =
            |text: &str| toml::from_str::<QueueDecl>(text).unwrap().to_settings().unwrap_err().to_string();
        assert!(
            err("name = 'q'\nvisibility_timeout = 50000").contains("visibility_timeout = 50000 is outside")
        );
        assert!(err("name = 'q'\nkind = 'fifo'").contains(".fifo"));
        assert!(err("name = 'q.fifo'").contains(".fifo"));
        assert!(err("name = 'q'\nmax_receive_count = 2").contains("go together"));
        assert!(err("name = 'q'\noverflow = 'explode'").contains("explode"));
    }

    #[test]
    fn credentials_from_file_and_environment() {
        let file = write("[credentials]\nAKIAFILE = \"file/secret+1\"\nAKIAFILE2 = \"s2\"\n");
        let args = || ServeArgs { config: Some(file.path().into()), ..ServeArgs::default() };
        let s = Settings::resolve_with_env(args(), None).unwrap();
        assert_eq!(s.sqs.credentials.len(), 2);
        assert_eq!(s.sqs.credentials.secret("AKIAFILE"), Some("file/secret+1"));

        // The variable replaces the table; secrets may contain ':'.
        let s = Settings::resolve_with_env(args(), Some(" AKIAENV:a:b , AKIAENV2:x ".into())).unwrap();
        assert_eq!(s.sqs.credentials.len(), 2);
        assert_eq!(s.sqs.credentials.secret("AKIAENV"), Some("a:b"));
        assert_eq!(s.sqs.credentials.secret("AKIAFILE"), None);
        // Empty is ignored, not "no keys".
        let s = Settings::resolve_with_env(args(), Some(String::new())).unwrap();
        assert_eq!(s.sqs.credentials.len(), 2);

        let s = Settings::resolve_with_env(ServeArgs::default(), None).unwrap();
        assert!(s.sqs.credentials.is_empty());

        let err = |v: &str| {
            Settings::resolve_with_env(ServeArgs::default(), Some(v.into())).unwrap_err().to_string()
        };
        let e = err("AKIA1:ok,justasecret");
        assert!(e.contains("entry 2") && !e.contains("justasecret"), "{e}");
        assert!(err("AKIA1:").contains("empty secret"));
        assert!(err("AKIA1:a,AKIA1:b").contains("twice"));
        assert!(err("AK/IA:a").contains("access key id"));
        // Debug output (the settings are logged at debug level) never shows a secret.
        let s = Settings::resolve_with_env(args(), None).unwrap();
        assert!(!format!("{s:?}").contains("file/secret+1"));
    }

    #[test]
    fn in_memory_wins_over_data_dir() {
        let args = ServeArgs { in_memory: Some(true), data_dir: Some("d".into()), ..ServeArgs::default() };
        assert_eq!(Settings::resolve(args).unwrap().storage, Storage::Memory);
    }
}
