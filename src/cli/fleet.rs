//! The fleet's commands: staged rollouts, runner tokens, org freezes, KPIs and the fleet
//! simulator. Exit codes: 0 done, 1 refused / aborted, 2 error.

use super::commands::{print_view, show};
use super::gate::refused;
use super::registry::{Who, open, open_read, open_to_change, print_json};
use crate::config::LabConfig;
use crate::contract::Channel;
use crate::error::{Result, exit};
use crate::gate::ops::Outcome;
use crate::gate::policy::Policy;
use crate::rollout::controller::{self, Op, Which};
use crate::rollout::view;
use crate::update::keys;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Start rolling a build out to a channel, step by step, judged on live telemetry. Refused
    /// (exit 1) when the gate refuses the build for the channel.
    Start {
        /// Build: digest, digest prefix or image reference.
        build: String,
        #[arg(long)]
        channel: Channel,
        /// Cohort percentages, e.g. 1,10,50,100 (default: the channel's `rollout:` policy).
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<f64>>,
        /// How long each step must look healthy, e.g. 10m (at most 7 days).
        #[arg(long, value_parser = crate::bounds::duration(std::time::Duration::ZERO, std::time::Duration::from_secs(7 * 86_400)))]
        bake: Option<std::time::Duration>,
        /// Sessions each side needs before a step is judged (1 to 10,000,000).
        #[arg(long, value_parser = crate::bounds::count(1, 10_000_000))]
        min_sessions: Option<u64>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        who: Who,
    },
    /// A rollout's step, figures against thresholds and decision timeline (exit 1 if aborted).
    Status {
        /// Rollout id (default: the channel's, or the latest).
        id: Option<i64>,
        #[arg(long)]
        channel: Option<Channel>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every rollout, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Hold a running rollout at its step.
    Pause(OperateArgs),
    /// Resume a paused rollout; its step bakes again from the start.
    Resume(OperateArgs),
    /// Stop a rollout and send every session back to the baseline.
    Abort(OperateArgs),
    /// Let a rollout enter its next step, which the channel's policy gates on an operator's
    /// approval (`approve_before`); audited.
    Approve {
        #[command(flatten)]
        a: OperateArgs,
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// One pass of the controller (what `canary serve` does every --tick).
    Tick {
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct OperateArgs {
    pub id: Option<i64>,
    #[arg(long)]
    pub channel: Option<Channel>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Issue a bearer token for a runner (bound to its orgs) or an operator (with a role); it is
    /// printed once and stored hashed.
    Create {
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator",
            requires = "orgs"
        )]
        runner: Option<String>,
        /// The orgs the runner serves: it is assigned, and may report, sessions of these only.
        #[arg(long = "org", num_args = 1.., conflicts_with = "operator")]
        orgs: Vec<String>,
        /// An operator (a person or a tool) who reads the dashboard, `/api/*` and `/v1/status`.
        #[arg(long, requires = "role")]
        operator: Option<String>,
        /// viewer: the dashboard and status; operator: also the audit log; admin: also changes.
        #[arg(long, value_enum)]
        role: Option<crate::tokens::Role>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        who: Who,
    },
    /// Tokens by runner (never the tokens themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or every token of a runner.
    Revoke {
        #[arg(required_unless_present = "runner", conflicts_with = "runner")]
        id: Option<String>,
        #[arg(long)]
        runner: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Args, Debug)]
pub struct FreezeArgs {
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Args, Debug)]
pub struct KpisArgs {
    #[arg(long, conflicts_with = "channel")]
    pub build: Option<String>,
    #[arg(long)]
    pub channel: Option<Channel>,
    /// The window, back from now.
    #[arg(long, default_value = "24h", value_parser = crate::bounds::duration(std::time::Duration::from_secs(1), std::time::Duration::from_secs(366 * 86_400)))]
    pub since: std::time::Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Post realistic telemetry for N runners through `canary serve` (assignment, then the
    /// session's outcome under the build's profile), for rollout statistics and load.
    Simulate {
        /// Base URL of `canary serve`.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        server: String,
        #[arg(long, default_value_t = 10)]
        runners: usize,
        #[arg(long, default_value_t = 1000)]
        sessions: u64,
        /// Sessions per second across the fleet (0: as fast as the server answers).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Orgs the sessions belong to, round robin.
        #[arg(long = "org", default_values_t = vec!["sim-org".to_string()])]
        orgs: Vec<String>,
        /// `BUILD_PREFIX=fail:0.2,disconnect:0.01,latency:900,drop:0.3,cost:2`, or `*=...` for every build
        /// (`drop`: the share of its sessions run but never reported; `cost`: a multiplier of each
        /// session's cost).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        #[arg(long, default_value_t = 200)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Runner ids are PREFIX-1..N; their tokens are issued in the registry for the run and
        /// revoked after it.
        #[arg(long, default_value = "sim")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
}

fn policy_of(config: &LabConfig, p: &Option<PathBuf>) -> Result<Policy> {
    Policy::load(p.as_deref().or(config.gate_policy.as_deref()))
}

/// The rollout an operation names (the channel was checked when it was parsed).
fn which<'a>(id: Option<i64>, channel: Option<&'a str>) -> Which<'a> {
    match (id, channel) {
        (Some(id), _) => Which::Id(id),
        (None, Some(c)) => Which::Channel(c),
        (None, None) => Which::Latest,
    }
}

pub async fn rollout(config: &LabConfig, cmd: &RolloutCommand) -> Result<i32> {
    match cmd {
        RolloutCommand::Start {
            build,
            channel,
            steps,
            bake,
            min_sessions,
            policy,
            json,
            who,
        } => {
            let policy = policy_of(config, policy)?;
            let req = controller::StartRequest {
                build,
                channel,
                steps: steps.clone(),
                bake: *bake,
                min_sessions: *min_sessions,
            };
            req.check(&policy)?;
            let reg = open_to_change(config).await?;
            let repos = config.repo_ids()?;
            let who = who.acting();
            match controller::start(&reg, &policy, &repos, &req, who).await? {
                Outcome::Done(r) => show(*json, &r, view::started(&r)),
                Outcome::Refused(why) => refused(*json, "rollout start", &why),
            }
        }
        RolloutCommand::Status {
            id,
            channel,
            policy,
            json,
        } => rollout_status(config, which(*id, channel.as_deref()), policy, *json).await,
        RolloutCommand::List { json } => {
            let reg = open_read(config).await?;
            let all = reg.rollouts(false, 1000).await?;
            show(*json, &all, view::list(&all))
        }
        RolloutCommand::Pause(a) | RolloutCommand::Resume(a) | RolloutCommand::Abort(a) => {
            let op = match cmd {
                RolloutCommand::Pause(_) => Op::Pause,
                RolloutCommand::Resume(_) => Op::Resume,
                _ => Op::Abort,
            };
            let w = which(a.id, a.channel.as_deref());
            let reg = open_to_change(config).await?;
            match controller::operate(&reg, w, op, a.who.acting()).await? {
                Outcome::Done(r) => show(a.json, &r, view::rollout(&r)),
                Outcome::Refused(why) => refused(a.json, "rollout", &why),
            }
        }
        RolloutCommand::Approve { a, policy } => {
            let policy = policy_of(config, policy)?;
            let reg = open_to_change(config).await?;
            let w = which(a.id, a.channel.as_deref());
            match crate::rollout::train::approve(&reg, &policy, w, a.who.acting()).await? {
                Outcome::Done(r) => show(a.json, &r, view::rollout(&r)),
                Outcome::Refused(why) => refused(a.json, "rollout approve", &why),
            }
        }
        RolloutCommand::Tick { policy, json } => {
            let policy = policy_of(config, policy)?;
            let reg = open_to_change(config).await?;
            let steps = controller::tick(&reg, &policy, jiff::Timestamp::now()).await?;
            show(*json, &steps, view::tick(&steps))?;
            Ok(
                if steps.iter().any(|s| s.action == Some(crate::rollout::EventKind::Abort)) {
                    exit::FAILED
                } else {
                    exit::PASS
                },
            )
        }
    }
}

/// `canary rollout status`: exit 1 when the rollout was aborted.
async fn rollout_status(config: &LabConfig, w: Which<'_>, policy: &Option<PathBuf>, json: bool) -> Result<i32> {
    let policy = policy_of(config, policy)?;
    let status = controller::status(&open_read(config).await?, &policy, w).await?;
    print_view(json, &status.value, status.lines);
    Ok(if status.aborted { exit::FAILED } else { exit::PASS })
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an ed25519 key: `<out>/<name>.key` (mode 0600, never overwritten) and
    /// `<out>/<name>.pub`. Make the root keys (kept offline) and the online key of
    /// `canary serve --online-key` this way.
    Create {
        #[arg(long)]
        out: PathBuf,
        /// The key's file name (e.g. root-a, root-b, online).
        #[arg(long, default_value = "signing")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the first TUF root, `<out>/1.root.json`: the root keys (k of n sign a root) and
    /// the online key (targets, snapshot, timestamp). Run it where the root keys are kept;
    /// give the folder to `canary serve --tuf` and the root file to every host.
    InitRoot {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        root: NewRoot,
        /// The online key's public half (its `.pub` file, or 64 hex digits).
        #[arg(long)]
        online_key: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the next root version in `--dir`: new root keys and threshold (and optionally a new
    /// online key), signed by a threshold of the current root's keys and of the new ones. Hosts
    /// follow it at their next check; `canary serve` publishes with it at its next tick.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        /// A key of the current root, once per key: at least its threshold.
        #[arg(long = "old-key", required = true)]
        old_keys: Vec<PathBuf>,
        #[command(flatten)]
        root: NewRoot,
        /// A new online key's public half (default: keep the current one).
        #[arg(long)]
        online_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The keys of a new root version, as `keys init-root` and `keys rotate` take them.
#[derive(Args, Debug)]
pub struct NewRoot {
    /// A root key file (`canary keys create`), once per key (a rotation may repeat old ones).
    #[arg(long = "root-key", required = true)]
    root_keys: Vec<PathBuf>,
    /// How many root keys must sign a root (default: all).
    #[arg(long, value_parser = crate::bounds::count(1, 64))]
    threshold: Option<u64>,
    /// How long the root holds.
    #[arg(long, default_value = "365d", value_parser = crate::bounds::duration(std::time::Duration::from_secs(3600), std::time::Duration::from_secs(10 * 365 * 24 * 3600)))]
    expires: std::time::Duration,
}

impl NewRoot {
    fn keys(&self) -> keys::RootKeys {
        let expires = jiff::SignedDuration::try_from(self.expires).expect("bounded at parse time");
        keys::RootKeys {
            keys: self.root_keys.clone(),
            threshold: self.threshold,
            expires: jiff::Timestamp::now() + expires,
        }
    }
}

pub async fn keys(cmd: &KeysCommand) -> Result<i32> {
    let written = match cmd {
        KeysCommand::Create { out, name, json } => {
            let k = keys::create(out, name)?;
            return show(*json, &k, k.lines());
        }
        KeysCommand::InitRoot {
            out,
            root,
            online_key,
            json,
        } => (keys::init_root(out, root.keys(), online_key).await?, *json),
        KeysCommand::Rotate {
            dir,
            old_keys,
            root,
            online_key,
            json,
        } => (
            keys::rotate(dir, old_keys, root.keys(), online_key.as_deref()).await?,
            *json,
        ),
    };
    show(written.1, &written.0, written.0.lines())
}

pub async fn tokens(config: &LabConfig, cmd: &TokensCommand) -> Result<i32> {
    use crate::access;
    match cmd {
        TokensCommand::Create {
            runner,
            orgs,
            operator,
            role,
            json,
            who: w,
        } => {
            let principal = match (runner, operator, role) {
                (Some(r), _, _) => crate::tokens::Principal::Runner {
                    runner: r.clone(),
                    orgs: orgs.iter().cloned().collect(),
                },
                (None, Some(o), Some(role)) => crate::tokens::Principal::Operator {
                    operator: o.clone(),
                    role: *role,
                },
                _ => unreachable!("clap requires --runner or --operator with --role"),
            };
            let who = w.acting();
            access::check(&principal)?;
            let t = access::issue(&open(config).await?, principal, who).await?;
            if *json {
                print_json(&t);
            } else {
                outln!("{}", t.token);
                eprintln!("{}", access::issued_note(&t));
            }
            Ok(exit::PASS)
        }
        TokensCommand::List { json } => {
            let all = open_read(config).await?.tokens().await?;
            show(*json, &all, access::lines(&all))
        }
        TokensCommand::Revoke {
            id,
            runner,
            json,
            who: w,
        } => {
            let which = match (id, runner) {
                (Some(i), _) => access::Revoke::Id(i),
                (None, Some(r)) => access::Revoke::Runner(r),
                _ => unreachable!("clap requires one"),
            };
            which.check()?;
            let reg = open_to_change(config).await?;
            let who = w.acting();
            let (n, target) = access::revoke(&reg, which, who).await?;
            if *json {
                print_json(&serde_json::json!({"revoked": n}));
            } else {
                outln!("revoked {n} token(s) ({target}); runners using them are refused within a second");
            }
            Ok(if n == 0 { exit::FAILED } else { exit::PASS })
        }
    }
}

pub async fn freeze(config: &LabConfig, a: &FreezeArgs, frozen: bool) -> Result<i32> {
    crate::gate::ops::check_name("org", &a.org)?;
    let reg = open(config).await?;
    let who = a.who.acting();
    let f = controller::freeze(&reg, &a.org, frozen, who).await?;
    show(a.json, &f, f.lines())
}

pub async fn kpis(config: &LabConfig, a: &KpisArgs) -> Result<i32> {
    let reg = open_read(config).await?;
    let k = crate::kpis::kpis(&reg, a.build.as_deref(), a.channel.as_deref(), a.since).await?;
    show(a.json, &k, crate::kpis::lines(&k, a.since))
}

pub async fn fleet(config: &LabConfig, cmd: &FleetCommand) -> Result<i32> {
    let FleetCommand::Simulate {
        server,
        runners,
        sessions,
        rate,
        orgs,
        profiles,
        batch,
        seed,
        prefix,
        json,
    } = cmd;
    let fleet = crate::simulate::Fleet {
        server: server.clone(),
        runners: *runners,
        prefix: prefix.clone(),
        orgs: orgs.clone(),
        sessions: *sessions,
        rate: *rate,
        batch: *batch,
        profiles: profiles
            .iter()
            .map(|p| crate::simulate::Profile::parse(p))
            .collect::<Result<_>>()?,
        seed: *seed,
    };
    fleet.check()?;
    let report = crate::simulate::run_fleet(&open(config).await?, &fleet).await?;
    show(*json, &report, report.lines(*runners))
}
