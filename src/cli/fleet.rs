//! The fleet's commands: staged rollouts, runner tokens, org freezes, KPIs and the fleet
//! simulator. Exit codes: 0 done, 1 refused / aborted, 2 error.

use super::gate::refused;
use super::registry::{Who, open, open_read, open_to_change, print_json, short};
use crate::config::LabConfig;
use crate::error::{LabError, Result, exit};
use crate::gate::ops::{Actor, Outcome};
use crate::gate::policy::Policy;
use crate::registry::{Audit, Registry, RolloutRow};
use crate::rollout::controller::{self, Op, Which};
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
        channel: String,
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
        channel: Option<String>,
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
    pub channel: Option<String>,
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
    pub channel: Option<String>,
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
        /// `BUILD_PREFIX=fail:0.2,disconnect:0.01,latency:900`, or `*=...` for every build.
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

fn who_of(w: &Who) -> (String, String) {
    (w.actor(), w.reason.clone())
}

fn policy_of(config: &LabConfig, p: &Option<PathBuf>) -> Result<Policy> {
    Policy::load(p.as_deref().or(config.gate_policy.as_deref()))
}

fn which<'a>(id: Option<i64>, channel: Option<&'a str>) -> Result<Which<'a>> {
    if let Some(c) = channel {
        crate::gate::ops::check_name("channel", c)?;
    }
    Ok(match (id, channel) {
        (Some(id), _) => Which::Id(id),
        (None, Some(c)) => Which::Channel(c),
        (None, None) => Which::Latest,
    })
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
            crate::gate::ops::check_name("channel", channel)?;
            let policy = policy_of(config, policy)?;
            policy.channel(channel)?;
            if let Some(s) = steps {
                crate::rollout::RolloutPolicy::check_steps(s)
                    .map_err(|e| LabError::usage(format!("--steps: {e}"), "e.g. --steps 1,10,50,100"))?;
            }
            let reg = open_to_change(config).await?;
            let repos = crate::repos::Catalog::load(&config.repos_dir, &config.cache_dir)?.ids();
            let (actor, reason) = who_of(who);
            let req = controller::StartRequest {
                build,
                channel,
                steps: steps.clone(),
                bake: *bake,
                min_sessions: *min_sessions,
            };
            match controller::start(
                &reg,
                &policy,
                &repos,
                &req,
                Actor {
                    name: &actor,
                    reason: &reason,
                },
            )
            .await?
            {
                Outcome::Done(r) => {
                    if *json {
                        print_json(&r);
                    } else {
                        outln!(
                            "rollout {} started: build {} -> {} (baseline {}), steps {} %, bake {}",
                            r.id,
                            short(&r.build_id),
                            r.channel,
                            short(&r.baseline_id),
                            r.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" → "),
                            humantime::format_duration(std::time::Duration::from_millis(r.bake_ms as u64))
                        );
                        outln!(
                            "  canary serve judges it every --tick; `canary rollout status {}` shows it",
                            r.id
                        );
                    }
                    Ok(exit::PASS)
                }
                Outcome::Refused(why) => refused(*json, "rollout start", &why),
            }
        }
        RolloutCommand::Status {
            id,
            channel,
            policy,
            json,
        } => {
            let w = which(*id, channel.as_deref())?;
            let policy = policy_of(config, policy)?;
            let reg = open_read(config).await?;
            let r = controller::find(&reg, w).await?;
            let judgement = controller::judge_rollout(&reg, &policy, &r).await?;
            let events = reg.rollout_events(r.id).await?;
            if *json {
                print_json(
                    &serde_json::json!({"rollout": r, "percent": r.percent(), "now": judgement, "events": events}),
                );
            } else {
                print_rollout(&r);
                outln!(
                    "  now: candidate {} sessions this step, baseline {} since the start",
                    judgement.candidate.sessions,
                    judgement.baseline.sessions
                );
                for c in &judgement.checks {
                    let mark = match c.verdict {
                        crate::rollout::Verdict::Pass => "✓",
                        crate::rollout::Verdict::Fail => "✗",
                        crate::rollout::Verdict::Inconclusive => "?",
                    };
                    outln!("    {mark} {}", c.why);
                }
                for reason in judgement
                    .reasons
                    .iter()
                    .filter(|r| r.contains("sessions a decision needs"))
                {
                    outln!("    ? {reason}");
                }
                outln!("  timeline:");
                for e in &events {
                    outln!(
                        "    {}  {:<8} step {}  {}",
                        e.ts,
                        e.kind,
                        e.step.map(|s| s + 1).unwrap_or(0),
                        e.actor
                    );
                }
            }
            Ok(if r.state == crate::rollout::State::Aborted {
                exit::FAILED
            } else {
                exit::PASS
            })
        }
        RolloutCommand::List { json } => {
            let reg = open_read(config).await?;
            let all = reg.rollouts(false, 1000).await?;
            if *json {
                print_json(&all);
            } else if all.is_empty() {
                outln!("no rollouts yet; `canary rollout start BUILD --channel C` starts one");
            } else {
                for r in &all {
                    outln!(
                        "{:>4}  {:<9} {:<8} {} ← {}  step {}/{} ({} %)  {}",
                        r.id,
                        r.state.as_str(),
                        r.channel,
                        short(&r.build_id),
                        short(&r.baseline_id),
                        r.step + 1,
                        r.steps.len(),
                        r.percent(),
                        crate::text::clean(&r.note)
                    );
                }
            }
            Ok(exit::PASS)
        }
        RolloutCommand::Pause(a) | RolloutCommand::Resume(a) | RolloutCommand::Abort(a) => {
            let op = match cmd {
                RolloutCommand::Pause(_) => Op::Pause,
                RolloutCommand::Resume(_) => Op::Resume,
                _ => Op::Abort,
            };
            let w = which(a.id, a.channel.as_deref())?;
            let reg = open_to_change(config).await?;
            let (actor, reason) = who_of(&a.who);
            match controller::operate(
                &reg,
                w,
                op,
                Actor {
                    name: &actor,
                    reason: &reason,
                },
            )
            .await?
            {
                Outcome::Done(r) => {
                    if a.json {
                        print_json(&r);
                    } else {
                        print_rollout(&r);
                    }
                    Ok(exit::PASS)
                }
                Outcome::Refused(why) => refused(a.json, "rollout", &why),
            }
        }
        RolloutCommand::Tick { policy, json } => {
            let policy = policy_of(config, policy)?;
            let reg = open_to_change(config).await?;
            let steps = controller::tick(&reg, &policy, jiff::Timestamp::now()).await?;
            if *json {
                print_json(&steps);
            } else if steps.is_empty() {
                outln!("no running rollout");
            } else {
                for s in &steps {
                    outln!(
                        "rollout {} on {}: {} at step {} ({} %): {}",
                        s.rollout,
                        s.channel,
                        s.action,
                        s.step + 1,
                        s.percent,
                        crate::text::clean(&s.note)
                    );
                }
            }
            Ok(if steps.iter().any(|s| s.action == "abort") {
                exit::FAILED
            } else {
                exit::PASS
            })
        }
    }
}

fn print_rollout(r: &RolloutRow) {
    outln!(
        "rollout {}: build {} -> {} (baseline {})",
        r.id,
        short(&r.build_id),
        r.channel,
        short(&r.baseline_id)
    );
    outln!(
        "  {} at step {} of {} ({} % of sessions) since {}, bake {}, {} sessions per side",
        r.state.as_str(),
        r.step + 1,
        r.steps.len(),
        r.percent(),
        r.step_started_at,
        humantime::format_duration(std::time::Duration::from_millis(r.bake_ms.max(0) as u64)),
        r.min_sessions
    );
    outln!("  {}", crate::text::clean(&r.note));
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
        /// A root key file (`canary keys create`), once per key.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// How many root keys must sign a root (default: all).
        #[arg(long, value_parser = crate::bounds::count(1, 64))]
        threshold: Option<u64>,
        /// The online key's public half (its `.pub` file, or 64 hex digits).
        #[arg(long)]
        online_key: String,
        /// How long the root holds.
        #[arg(long, default_value = "365d", value_parser = crate::bounds::duration(std::time::Duration::from_secs(3600), std::time::Duration::from_secs(10 * 365 * 24 * 3600)))]
        expires: std::time::Duration,
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
        /// A key of the new root, once per key (may repeat old ones).
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long, value_parser = crate::bounds::count(1, 64))]
        threshold: Option<u64>,
        /// A new online key's public half (default: keep the current one).
        #[arg(long)]
        online_key: Option<String>,
        #[arg(long, default_value = "365d", value_parser = crate::bounds::duration(std::time::Duration::from_secs(3600), std::time::Duration::from_secs(10 * 365 * 24 * 3600)))]
        expires: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
}

fn root_said(json: bool, w: &keys::WrittenRoot) {
    if json {
        print_json(w);
    } else {
        outln!(
            "root {} (version {}, {} of {} root keys)",
            w.root.display(),
            w.version,
            w.threshold,
            w.root_key_ids.len()
        );
        for id in &w.root_key_ids {
            outln!("  root key {id}");
        }
    }
}

pub async fn keys(cmd: &KeysCommand) -> Result<i32> {
    use crate::update::sign::Trusted;
    use crate::update::tuf;
    let later = |d: &std::time::Duration| {
        jiff::Timestamp::now() + jiff::SignedDuration::try_from(*d).expect("bounded at parse time")
    };
    let written = match cmd {
        KeysCommand::Create { out, name, json } => {
            crate::gate::ops::check_name("key", name)?;
            let key = crate::update::sign::Key::generate()?;
            let (private, public) = (out.join(format!("{name}.key")), out.join(format!("{name}.pub")));
            key.write(&private, &public)?;
            let p = key.public();
            if *json {
                print_json(
                    &serde_json::json!({"private_key": private, "public_key": p.hex(), "public_key_file": public, "key_id": p.id(), "tuf_key_id": tuf::key_id(&p)}),
                );
            } else {
                outln!("private key  {} (keep it secret; mode 0600)", private.display());
                outln!("public key   {} ({})", public.display(), p.hex());
                outln!("key id       {}", tuf::key_id(&p));
                outln!("next: canary keys init-root --out DIR --root-key ROOT.key ... --online-key ONLINE.pub");
            }
            return Ok(exit::PASS);
        }
        KeysCommand::InitRoot {
            out,
            root_keys,
            threshold,
            online_key,
            expires,
            json,
        } => {
            let new = keys::RootKeys {
                keys: keys::load(root_keys)?,
                threshold: *threshold,
                expires: later(expires),
            };
            (keys::init_root(out, new, &Trusted::parse(online_key)?).await?, *json)
        }
        KeysCommand::Rotate {
            dir,
            old_keys,
            root_keys,
            threshold,
            online_key,
            expires,
            json,
        } => {
            let new = keys::RootKeys {
                keys: keys::load(root_keys)?,
                threshold: *threshold,
                expires: later(expires),
            };
            let online = online_key.as_deref().map(Trusted::parse).transpose()?;
            (keys::rotate(dir, keys::load(old_keys)?, new, online).await?, *json)
        }
    };
    root_said(written.1, &written.0);
    Ok(exit::PASS)
}

pub async fn tokens(config: &LabConfig, cmd: &TokensCommand) -> Result<i32> {
    match cmd {
        TokensCommand::Create {
            runner,
            orgs,
            operator,
            role,
            json,
            who,
        } => {
            let principal = match (runner, operator, role) {
                (Some(r), _, _) => {
                    for o in orgs {
                        crate::gate::ops::check_name("org", o)?;
                    }
                    crate::tokens::Principal::Runner {
                        runner: r.clone(),
                        orgs: orgs.iter().cloned().collect(),
                    }
                }
                (None, Some(o), Some(role)) => crate::tokens::Principal::Operator {
                    operator: o.clone(),
                    role: *role,
                },
                _ => unreachable!("clap requires --runner or --operator with --role"),
            };
            let name = principal.name().to_string();
            if !crate::telemetry::is_id(&name) {
                return Err(LabError::usage(
                    format!("`{}` is not an id", crate::text::clean(&name)),
                    "a runner id or operator name is 1 to 128 letters, digits, `.`, `_`, `:`, `-`",
                ));
            }
            let reg = open(config).await?;
            let t = crate::tokens::issue(principal)?;
            let (actor, reason) = who_of(who);
            let what = match &t.principal {
                crate::tokens::Principal::Runner { orgs, .. } => {
                    format!(
                        "runner {name} (orgs {})",
                        orgs.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                }
                crate::tokens::Principal::Operator { role, .. } => format!("operator {name} ({})", role.as_str()),
            };
            reg.add_token(
                &t,
                Audit {
                    actor: &actor,
                    action: "token create",
                    target: &format!("{what} token {}", t.id),
                    decision: "done",
                    reason: &reason,
                    evidence: serde_json::json!({}),
                },
            )
            .await?;
            if *json {
                print_json(&t);
            } else {
                outln!("{}", t.token);
                eprintln!(
                    "token {} for {what}: shown once, stored hashed; send it as `Authorization: Bearer …` (a runner: canary-runner --token / CANARY_RUNNER_TOKEN; a browser: as the password)",
                    t.id
                );
            }
            Ok(exit::PASS)
        }
        TokensCommand::List { json } => {
            let reg = open_read(config).await?;
            let all = reg.tokens().await?;
            if *json {
                print_json(&all);
            } else if all.is_empty() {
                outln!("no tokens; `canary tokens create --runner ID --org ORG` issues one");
            } else {
                for t in &all {
                    let who = match &t.principal {
                        crate::tokens::Principal::Runner { runner, orgs } => format!(
                            "runner {} [{}]",
                            crate::text::clean(runner),
                            crate::text::clean(&orgs.iter().cloned().collect::<Vec<_>>().join(","))
                        ),
                        crate::tokens::Principal::Operator { operator, role } => {
                            format!("operator {} ({})", crate::text::clean(operator), role.as_str())
                        }
                    };
                    outln!(
                        "{}  {:<32} created {} by {}{}",
                        t.id,
                        who,
                        t.created_at,
                        crate::text::clean(&t.actor),
                        t.revoked_at
                            .as_ref()
                            .map(|r| format!(", revoked {r}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(exit::PASS)
        }
        TokensCommand::Revoke { id, runner, json, who } => {
            if let Some(i) = id {
                if i.len() != 12 || !i.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(LabError::usage(
                        format!("`{}` is not a token id", crate::text::clean(i)),
                        "token ids are the 12 hex digits `canary tokens list` shows",
                    ));
                }
            }
            let reg = open_to_change(config).await?;
            let (actor, reason) = who_of(who);
            let target = match (id, runner) {
                (Some(i), _) => format!("token {i}"),
                (None, Some(r)) => format!("runner {} tokens", crate::text::clean(r)),
                _ => unreachable!("clap requires one"),
            };
            let n = reg
                .revoke_tokens(
                    id.as_deref(),
                    runner.as_deref(),
                    Audit {
                        actor: &actor,
                        action: "token revoke",
                        target: &target,
                        decision: "done",
                        reason: &reason,
                        evidence: serde_json::json!({}),
                    },
                )
                .await?;
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
    let (actor, reason) = who_of(&a.who);
    let verb = if frozen { "freeze" } else { "unfreeze" };
    let changed = reg
        .set_freeze(
            &a.org,
            frozen,
            &reason,
            Audit {
                actor: &actor,
                action: verb,
                target: &format!("org {}", a.org),
                decision: "done",
                reason: &reason,
                evidence: serde_json::json!({}),
            },
        )
        .await?;
    if a.json {
        print_json(&serde_json::json!({"org": a.org, "frozen": frozen, "changed": changed}));
    } else if frozen {
        outln!(
            "org {} is kept out of every rollout: its sessions run their channel's current build",
            a.org
        );
    } else {
        outln!("org {} takes part in rollouts again", a.org);
    }
    Ok(exit::PASS)
}

async fn kpi_rows(reg: &Registry, a: &KpisArgs) -> Result<Vec<(String, String)>> {
    if let Some(b) = &a.build {
        return Ok(vec![(reg.resolve_build(b).await?, "build".into())]);
    }
    let state = reg.fleet_state().await?;
    let mut rows = Vec::new();
    for (channel, build) in &state.channels {
        if a.channel.as_deref().is_none_or(|c| c == channel) {
            rows.push((build.clone(), format!("{channel} (current)")));
        }
    }
    for (channel, r) in &state.rollouts {
        if a.channel.as_deref().is_none_or(|c| c == channel) {
            rows.push((r.build.clone(), format!("{channel} (rollout {} candidate)", r.id)));
        }
    }
    if let Some(c) = &a.channel {
        if rows.is_empty() {
            return Err(LabError::usage(
                format!("channel {c} has no build"),
                "`canary status` lists the channels",
            ));
        }
    }
    Ok(rows)
}

pub async fn kpis(config: &LabConfig, a: &KpisArgs) -> Result<i32> {
    if let Some(c) = &a.channel {
        crate::gate::ops::check_name("channel", c)?;
    }
    let since_ts = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(a.since).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MIN);
    let since = crate::registry::rollup_second(since_ts);
    let reg = open_read(config).await?;
    let mut out = Vec::new();
    for (build, role) in kpi_rows(&reg, a).await? {
        let (sums, start, approval) = reg.telemetry_sums(&build, &since).await?;
        out.push(serde_json::json!({
            "build": build, "role": role, "kpis": crate::telemetry::kpis(&sums, &start, &approval)
        }));
    }
    if a.json {
        print_json(&serde_json::json!({"since": since_ts.to_string(), "builds": out}));
        return Ok(exit::PASS);
    }
    let f = |v: &serde_json::Value, unit: &str| match v.as_f64() {
        Some(x) => format!("{x}{unit}"),
        None => "–".into(),
    };
    outln!("KPIs since {} ({})", since_ts, humantime::format_duration(a.since));
    for row in &out {
        let k = &row["kpis"];
        outln!(
            "{} {}",
            short(row["build"].as_str().unwrap_or("")),
            row["role"].as_str().unwrap_or("")
        );
        outln!("  sessions                 {}", k["sessions"]);
        outln!(
            "  session start success    {}",
            f(&k["session_start_success_pct"], " %")
        );
        outln!(
            "  time to terminal         avg {}, p95 {}",
            f(&k["avg_time_to_terminal_ms"], " ms"),
            f(&k["p95_time_to_terminal_ms"], " ms")
        );
        outln!("  failure rate             {}", f(&k["failure_rate_pct"], " %"));
        outln!("  disconnect rate          {}", f(&k["disconnect_rate_pct"], " %"));
        outln!("  command failure rate     {}", f(&k["command_failure_rate_pct"], " %"));
        outln!(
            "  approval gates           {} (median resolution {})",
            k["approval_gates"],
            f(&k["median_approval_resolution_ms"], " ms")
        );
        outln!(
            "  cost per agent-hour      {}",
            f(&k["cost_per_agent_hour_usd"], " USD")
        );
    }
    Ok(exit::PASS)
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
    if *json {
        print_json(&report);
    } else {
        outln!(
            "{} sessions from {} runners in {:.1} s ({:.0}/s), {} batches, {} retries",
            report.sessions,
            runners,
            report.seconds,
            report.sessions as f64 / report.seconds.max(1e-9),
            report.batches,
            report.retries
        );
        for (b, t) in &report.by_build {
            outln!(
                "  {}  {} sessions, {} failed, {} disconnected",
                short(b),
                t.sessions,
                t.failed,
                t.disconnected
            );
        }
        for (s, n) in &report.by_source {
            outln!("  {s}: {n}");
        }
        if report.unassigned > 0 {
            outln!(
                "  {} sessions had no build to run (no channel build yet)",
                report.unassigned
            );
        }
    }
    Ok(exit::PASS)
}
