//! The black-box conformance suite: the same HTTP cases against every runtime of the gateway.
//!
//! `cargo build --workspace && cargo test --test conformance` starts one mock upstream
//! (`target/debug/mock-upstream`) and each target named in `CONFORMANCE_TARGETS`
//! (comma-separated, default `fly`): `fly` runs `target/debug/fly-fallback`, `worker` runs the
//! Worker with `wrangler dev`. Every case then runs against every target as a trial named
//! `<target>::<case>`. When both runtimes are targets, the parity cases (`cases/parity.rs`) also
//! run, once each, as `parity::<case>`: the same requests to both, compared. All child processes
//! are stopped before the process exits. Child output is in `target/debug/conformance-logs/`.
//!
//! The multi-region cases (`cases/regions.rs`) use a second gateway per target, in front of three
//! mocks of its own ([`harness::spawn_regions`]); it is started only when one of them is to run,
//! after the targets are ready. They run one at a time per target (they share the fixture's
//! mocks and upstream state), so their trials come last, the two targets' interleaved, so that
//! the threads waiting for one fixture leave others for the other fixture.
//!
//! Trials of a group are named `<target>::<group>::<case>` (parity: `parity::<group>::<case>`),
//! so that a group runs alone with the filter `::<group>::`: `regions`, and `cost` (cost
//! accounting, `auto`/tier selection and the estimate endpoint, `cases/cost.rs`), `analytics`
//! (the Worker's Analytics Engine data points, `cases/analytics.rs`), e.g.
//! `CONFORMANCE_TARGETS=fly,worker cargo test --test conformance -- ::cost::`.

mod cases;
mod client;
mod expect;
mod harness;
mod raw;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

use cases::{Case, Ctx};
use harness::Processes;

/// No case takes longer than this (the slowest ones need a few seconds).
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Trials mostly wait on the network; run more of them at once than there are cores.
const DEFAULT_TEST_THREADS: usize = 8;

type TargetSlot = Arc<OnceLock<Result<Arc<Ctx>, String>>>;

fn run_trial(rt: &tokio::runtime::Runtime, slot: &TargetSlot, case: &Case) -> Result<(), Failed> {
    let ctx = match slot.get() {
        Some(Ok(ctx)) => ctx.clone(),
        Some(Err(e)) => return Err(format!("the target did not start: {e}").into()),
        None => return Err("the target was not started".into()),
    };
    // The timer must be created inside the runtime.
    rt.block_on(async { tokio::time::timeout(CASE_TIMEOUT, (case.run)(ctx)).await })
        .map_err(|_| Failed::from(format!("the case did not finish within {CASE_TIMEOUT:?}")))
}

fn run_parity(
    rt: &tokio::runtime::Runtime,
    fly: &TargetSlot,
    worker: &TargetSlot,
    case: &cases::parity::ParityCase,
) -> Result<(), Failed> {
    let ctx = |slot: &TargetSlot, name: &str| match slot.get() {
        Some(Ok(ctx)) => Ok(ctx.clone()),
        Some(Err(e)) => Err(Failed::from(format!("{name} did not start: {e}"))),
        None => Err(Failed::from(format!("{name} was not started"))),
    };
    let (a, b) = (ctx(fly, "fly")?, ctx(worker, "worker")?);
    rt.block_on(async { tokio::time::timeout(CASE_TIMEOUT, (case.run)(a, b)).await })
        .map_err(|_| Failed::from(format!("the case did not finish within {CASE_TIMEOUT:?}")))
}

/// Starts the mock and the targets that have trials to run, and fills their slots; then the
/// multi-region fixtures of the targets that have such trials to run.
fn start(
    rt: &tokio::runtime::Runtime,
    procs: &mut Processes,
    slots: &[(String, TargetSlot, bool)],
) {
    let http = client::new_client();
    let mock = match rt.block_on(harness::start_mock(procs, &http)) {
        Ok(m) => m,
        Err(e) => {
            for (_, slot, _) in slots {
                let _ = slot.set(Err(format!("the mock upstream did not start: {e}")));
            }
            return;
        }
    };
    let mut waiting = Vec::new();
    for (name, slot, _) in slots {
        match harness::spawn_target(procs, name, &mock) {
            Ok(spawned) => waiting.push((slot.clone(), spawned)),
            Err(e) => {
                let _ = slot.set(Err(e));
            }
        }
    }
    let ready = rt.block_on(futures_util::future::join_all(waiting.iter().map(
        |(_, (started, target, timeout))| {
            harness::wait_target(&http, started, target.clone(), *timeout)
        },
    )));
    for ((slot, _), result) in waiting.iter().zip(ready) {
        let _ = slot.set(result.map(|t| {
            Arc::new(Ctx {
                target: t.name,
                base: t.base,
                addr: t.addr,
                key: harness::CLIENT_KEY.to_string(),
                second_key: harness::SECOND_CLIENT_KEY.to_string(),
                mock: mock.base.clone(),
                repo: harness::repo_root(),
                http: http.clone(),
                regions: OnceLock::new(),
            })
        }));
    }

    // The multi-region fixtures: the Worker's serves the bundle its target just built.
    let mut spawned = Vec::new();
    for (name, slot, regions) in slots {
        let Some(Ok(ctx)) = slot.get() else { continue };
        if !*regions {
            continue;
        }
        match harness::spawn_regions(procs, name) {
            Ok(s) => spawned.push((ctx.clone(), s)),
            Err(e) => {
                let _ = ctx.regions.set(Err(e));
            }
        }
    }
    let ready =
        rt.block_on(futures_util::future::join_all(spawned.into_iter().map(
            |(ctx, s)| async { (ctx, harness::wait_regions(&http, s).await) },
        )));
    for (ctx, result) in ready {
        let _ = ctx.regions.set(result.map(Arc::new));
    }
}

/// `GROUP::` for a case's group, or nothing.
fn group_prefix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!("{group}::")
    }
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(DEFAULT_TEST_THREADS);
    }
    let targets = match harness::requested_targets() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("conformance: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("conformance: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };

    let mut slots: Vec<(String, TargetSlot)> = Vec::new();
    let mut trials = Vec::new();
    // Per target: the multi-region trials, put last (interleaved) below.
    let mut region_trials: Vec<Vec<Trial>> = Vec::new();
    // Per target: does any of its trials survive the filter? Any multi-region one?
    let mut wanted: Vec<bool> = Vec::new();
    let mut wanted_regions: Vec<bool> = Vec::new();
    for target in &targets {
        let slot: TargetSlot = Arc::new(OnceLock::new());
        let mut any = false;
        let mut any_regions = false;
        let mut own_regions = Vec::new();
        for case in cases::all().into_iter().filter(|c| c.applies_to(target)) {
            let (rt, slot2) = (rt.clone(), slot.clone());
            let regions = case.regions;
            // `<target>::<group>::<case>`: a group can be run alone (e.g. filter `::regions::`).
            let group = group_prefix(case.group);
            let trial = Trial::test(format!("{target}::{group}{}", case.name), move || {
                run_trial(&rt, &slot2, &case)
            });
            let runs = !args.is_filtered_out(&trial);
            any |= runs;
            any_regions |= runs && regions;
            if regions {
                own_regions.push(trial);
            } else {
                trials.push(trial);
            }
        }
        slots.push((target.clone(), slot));
        wanted.push(any);
        wanted_regions.push(any_regions);
        region_trials.push(own_regions);
    }
    let longest = region_trials.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = region_trials.into_iter().map(Vec::into_iter).collect();
    for _ in 0..longest {
        for it in &mut iters {
            trials.extend(it.next());
        }
    }

    // Parity trials need both runtimes; they start whichever of the two the filter left out.
    let slot_of = |name: &str| slots.iter().position(|(n, _)| n == name);
    if let (Some(fi), Some(wi)) = (slot_of("fly"), slot_of("worker")) {
        for case in cases::parity::all() {
            let (rt, fly, worker) = (rt.clone(), slots[fi].1.clone(), slots[wi].1.clone());
            let regions = case.regions;
            let group = group_prefix(case.group);
            let name = format!("parity::{group}{}", case.name);
            let trial = Trial::test(name, move || run_parity(&rt, &fly, &worker, &case));
            if !args.is_filtered_out(&trial) {
                wanted[fi] = true;
                wanted[wi] = true;
                if regions {
                    wanted_regions[fi] = true;
                    wanted_regions[wi] = true;
                }
            }
            trials.push(trial);
        }
    }

    // Stops every child when dropped: below, or while a panic unwinds.
    let mut procs = Processes::default();
    if !args.list {
        let to_start: Vec<(String, TargetSlot, bool)> = slots
            .iter()
            .zip(wanted.iter().zip(&wanted_regions))
            .filter(|(_, (w, _))| **w)
            .map(|((name, slot), (_, r))| (name.clone(), slot.clone(), *r))
            .collect();
        if !to_start.is_empty() {
            let t0 = Instant::now();
            start(&rt, &mut procs, &to_start);
            eprintln!(
                "conformance: everything started after {:.1}s",
                t0.elapsed().as_secs_f64()
            );
        }
    }

    let conclusion = libtest_mimic::run(&args, trials);
    drop(procs);
    conclusion.exit();
}
