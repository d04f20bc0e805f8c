//! Where each case runs when a run has several engines: the engine with the most free slots
//! takes the next case; an engine that goes away mid-run hands the cases it was running to the
//! others, once each (a case whose engine died is not a verdict on the candidate; a case that
//! loses a second engine stands as the lab's error, never as a pass).

use super::case::{self, CaseContext};
use super::plan::Case;
use crate::engine::Backend;
use crate::report::{self, CaseReport, CaseStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// An engine a run may place cases on.
pub struct Engine<B> {
    /// The name reports give it (`engines:` in canary.yaml); `None` for a run on one engine.
    pub name: Option<String>,
    pub backend: B,
    /// Cases it runs at once.
    pub slots: usize,
}

/// One engine during a run: its backend, its own services and case images, its slots.
pub(super) struct Lane<B> {
    pub name: Option<String>,
    pub backend: B,
    pub cx: Arc<CaseContext>,
    slots: Arc<Semaphore>,
}

impl<B> Lane<B> {
    pub fn new(name: Option<String>, backend: B, cx: Arc<CaseContext>, slots: usize) -> Lane<B> {
        Lane {
            name,
            backend,
            cx,
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }
}

/// Which engine takes the next case: start permits per engine (one beyond its slots, so a
/// container can be starting while the running cases work), whether each is alive, and the
/// signal that a permit came free or an engine went away.
pub(super) struct Placer {
    warm: Vec<Arc<Semaphore>>,
    alive: Vec<AtomicBool>,
    changed: Notify,
}

impl Placer {
    pub fn new(slots: &[usize]) -> Placer {
        Placer {
            warm: slots.iter().map(|&n| Arc::new(Semaphore::new(n.max(1) + 1))).collect(),
            alive: slots.iter().map(|_| AtomicBool::new(true)).collect(),
            changed: Notify::new(),
        }
    }

    /// A live engine (not `exclude`) with a free start permit, the one with the most free
    /// first; waits while all are busy. `None` when no live engine is left.
    pub async fn place(&self, exclude: Option<usize>) -> Option<(usize, OwnedSemaphorePermit)> {
        loop {
            // Registered before looking, so a permit freed in between still wakes this task.
            let changed = self.changed.notified();
            let mut order: Vec<usize> = (0..self.warm.len())
                .filter(|&i| Some(i) != exclude && self.alive[i].load(Ordering::SeqCst))
                .collect();
            if order.is_empty() {
                return None;
            }
            order.sort_by_key(|&i| std::cmp::Reverse(self.warm[i].available_permits()));
            for i in order {
                if let Ok(p) = self.warm[i].clone().try_acquire_owned() {
                    return Some((i, p));
                }
            }
            changed.await;
        }
    }

    /// A permit was given back (drop it first).
    pub fn freed(&self) {
        self.changed.notify_waiters();
    }

    pub fn alive(&self, i: usize) -> bool {
        self.alive[i].load(Ordering::SeqCst)
    }

    /// Engine `i` takes no more cases; whoever waits looks again.
    pub fn gone(&self, i: usize) {
        self.alive[i].store(false, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The run's engines and where their cases go.
pub(super) struct Lanes<B> {
    pub lanes: Vec<Lane<B>>,
    placer: Placer,
}

/// How long an engine may take to answer before it counts as gone.
const ALIVE_WITHIN: Duration = Duration::from_secs(5);

impl<B: Backend + Clone> Lanes<B> {
    pub fn new(lanes: Vec<Lane<B>>, slots: &[usize]) -> Lanes<B> {
        Lanes {
            lanes,
            placer: Placer::new(slots),
        }
    }

    /// After a case ended in the lab's error: whether its engine is gone (it does not answer
    /// within [`ALIVE_WITHIN`]). A gone engine takes no more cases.
    async fn lost(&self, i: usize) -> bool {
        if !self.placer.alive(i) {
            return true;
        }
        let answered = tokio::time::timeout(ALIVE_WITHIN, self.lanes[i].backend.describe()).await;
        let gone = !matches!(answered, Ok(Ok(_)));
        if gone {
            self.placer.gone(i);
        }
        gone
    }

    /// Runs one case: placed, started, run; moved once to another engine when its own went
    /// away. `None` when no engine is left to run it.
    pub async fn run_one(&self, case: &Case, attempt: u32, bar: &indicatif::ProgressBar) -> Option<CaseReport> {
        let mut exclude = None;
        let mut announced = false;
        loop {
            let (i, warm) = self.placer.place(exclude).await?;
            let lane = &self.lanes[i];
            let container = case::start(&lane.backend, &lane.cx, case, attempt).await;
            let slot = lane
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closes");
            if !announced {
                bar.set_message(case.id.clone());
                lane.cx
                    .events
                    .emit_or_warn(report::events::RunEvent::CaseStarted { id: &case.id, attempt })
                    .await;
                announced = true;
            }
            let mut r = case::run_case(&lane.backend, &lane.cx, case, container, attempt).await;
            drop((warm, slot));
            self.placer.freed();
            r.engine = lane.name.clone();
            if r.status == CaseStatus::Error && exclude.is_none() && self.lanes.len() > 1 && self.lost(i).await {
                let text = format!(
                    "engine {} went away: case {} runs again on another engine",
                    lane.name.as_deref().unwrap_or("?"),
                    case.id
                );
                lane.cx.events.emit_or_warn(report::events::RunEvent::Note(text)).await;
                exclude = Some(i);
                continue;
            }
            return Some(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_engine_with_most_free_slots_takes_the_next_case() {
        let p = Placer::new(&[1, 2]);
        // 2 and 3 start permits: the second engine first, then whichever has more left.
        let (a, _pa) = p.place(None).await.unwrap();
        assert_eq!(a, 1);
        let (b, _pb) = p.place(None).await.unwrap();
        let (c, _pc) = p.place(None).await.unwrap();
        let mut got = [a, b, c];
        got.sort();
        assert_eq!(got, [0, 1, 1], "ties go to either; counts follow the free permits");
    }

    #[tokio::test]
    async fn a_full_lab_waits_for_a_freed_slot_and_a_gone_engine_takes_nothing() {
        let p = Arc::new(Placer::new(&[1, 1]));
        let held: Vec<_> = futures_util::future::join_all((0..4).map(|_| p.place(None))).await;
        assert!(held.iter().all(Option::is_some));
        // Everything is taken: the next case waits until a permit of engine 0 comes back.
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move { p.place(None).await.map(|(i, _)| i) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        let mut held = held.into_iter().flatten().collect::<Vec<_>>();
        let i = held.iter().position(|(i, _)| *i == 0).unwrap();
        drop(held.remove(i));
        p.freed();
        assert_eq!(waiting.await.unwrap(), Some(0));
        // Engine 1 goes away: a case excluded from engine 0 has nowhere to go.
        p.gone(1);
        assert!(!p.alive(1));
        drop(held);
        assert_eq!(p.place(Some(0)).await.map(|(i, _)| i), None);
        assert_eq!(p.place(None).await.map(|(i, _)| i), Some(0));
    }
}
