//! One lane per partition: records of a partition are processed in order,
//! one at a time, by a task of its own, so a record that cannot be stored
//! (Redis refusing it, and the store trying again) holds up its own
//! partition only.
//!
//! The reading loop hands each record to its partition's lane, a queue of
//! [`LANE_DEPTH`] records. When a lane is full, its partition is paused at
//! the consumer (no more is fetched for it), and the records that arrive
//! meanwhile wait in order in the lane's overflow; once its task has made
//! room, they go in and the partition is resumed. Offsets are stored by the
//! lane's task after each record, in order, so what is committed is still
//! only what was processed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

/// Records a lane holds before its partition is paused.
pub(crate) const LANE_DEPTH: usize = 256;

/// What the lanes ask of the consumer: to stop and restart fetching one
/// partition.
pub(crate) trait Flow {
    /// Fetch nothing more of `partition` for now.
    fn pause(&self, partition: i32);
    /// Fetch `partition` again.
    fn resume(&self, partition: i32);
}

/// One partition's lane.
struct Lane<R> {
    tx: mpsc::Sender<R>,
    overflow: VecDeque<R>,
    paused: bool,
    task: JoinHandle<()>,
}

/// Every partition's lane; `R` is a record, `W` makes a partition's task
/// from its queue.
pub(crate) struct Lanes<R, W> {
    lanes: HashMap<i32, Lane<R>>,
    work: W,
}

impl<R, W, F> Lanes<R, W>
where
    R: Send + 'static,
    W: FnMut(i32, mpsc::Receiver<R>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    /// No lanes yet; `work(partition, records)` is a partition's task,
    /// which takes its records in order until the queue ends.
    pub(crate) fn new(work: W) -> Self {
        Self {
            lanes: HashMap::new(),
            work,
        }
    }

    /// Hands `record` of `partition` to its lane, pausing the partition
    /// when the lane is full.
    pub(crate) fn offer(&mut self, partition: i32, record: R, flow: &impl Flow) {
        let work = &mut self.work;
        let lane = self.lanes.entry(partition).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(LANE_DEPTH);
            Lane {
                tx,
                overflow: VecDeque::new(),
                paused: false,
                task: tokio::spawn(work(partition, rx)),
            }
        });
        let record = if lane.overflow.is_empty() {
            match lane.tx.try_send(record) {
                Ok(()) => return,
                Err(TrySendError::Full(record)) => record,
                // The task has ended (stopping): the record stays
                // uncommitted, to be delivered again.
                Err(TrySendError::Closed(_)) => return,
            }
        } else {
            record
        };
        lane.overflow.push_back(record);
        if !lane.paused {
            flow.pause(partition);
            lane.paused = true;
        }
    }

    /// Moves waiting records into lanes that have room, and resumes the
    /// partitions whose overflow is empty again. Call it now and then.
    pub(crate) fn unblock(&mut self, flow: &impl Flow) {
        for (partition, lane) in &mut self.lanes {
            while let Some(record) = lane.overflow.pop_front() {
                match lane.tx.try_send(record) {
                    Ok(()) => {}
                    Err(TrySendError::Full(record)) => {
                        lane.overflow.push_front(record);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => lane.overflow.clear(),
                }
            }
            if lane.paused && lane.overflow.is_empty() {
                flow.resume(*partition);
                lane.paused = false;
            }
        }
    }

    /// Whether `partition` is paused (for tests).
    #[cfg(test)]
    fn is_paused(&self, partition: i32) -> bool {
        self.lanes.get(&partition).is_some_and(|l| l.paused)
    }

    /// Ends every lane's queue and waits for their tasks (each finishes,
    /// or gives up, the record in hand).
    pub(crate) async fn close(self) {
        let tasks: Vec<JoinHandle<()>> = self
            .lanes
            .into_values()
            .map(|lane| {
                drop(lane.tx);
                lane.task
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;

    /// Records which partitions are paused.
    #[derive(Default)]
    struct Flows(Mutex<Vec<(i32, bool)>>);

    impl Flow for Flows {
        fn pause(&self, partition: i32) {
            self.0.lock().expect("lock").push((partition, true));
        }
        fn resume(&self, partition: i32) {
            self.0.lock().expect("lock").push((partition, false));
        }
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_stuck_record_holds_up_its_own_partition_only() {
        // Partition 0's first record is stuck until `release` says go.
        let (release, released) = watch::channel(false);
        let done: Arc<Mutex<Vec<(i32, u32)>>> = Arc::default();
        let seen = done.clone();
        let mut lanes = Lanes::new(move |partition, mut rx: mpsc::Receiver<u32>| {
            let (done, mut released) = (seen.clone(), released.clone());
            async move {
                while let Some(n) = rx.recv().await {
                    if partition == 0 && n == 0 {
                        let _ = released.wait_for(|r| *r).await;
                    }
                    done.lock().expect("lock").push((partition, n));
                }
            }
        });
        let flows = Flows::default();
        let total = LANE_DEPTH as u32 + 50;
        for n in 0..total {
            lanes.offer(0, n, &flows);
            lanes.offer(1, n, &flows);
        }
        // Partition 1 goes on to its end; partition 0 is paused, not lost.
        eventually("partition 1 processed whole", || {
            lanes.unblock(&flows);
            done.lock()
                .expect("lock")
                .iter()
                .filter(|(p, _)| *p == 1)
                .count()
                == total as usize
        })
        .await;
        lanes.unblock(&flows);
        assert!(lanes.is_paused(0));
        assert!(!lanes.is_paused(1));
        let of = |partition: i32| -> Vec<bool> {
            let flows = flows.0.lock().expect("lock");
            flows
                .iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, paused)| *paused)
                .collect()
        };
        assert_eq!(of(0), vec![true], "partition 0 paused");
        assert!(done.lock().expect("lock").iter().all(|(p, _)| *p == 1));

        // Released: partition 0 goes on, in order, and is resumed.
        let _ = release.send(true);
        eventually("partition 0 drained into its lane", || {
            lanes.unblock(&flows);
            !lanes.is_paused(0)
        })
        .await;
        lanes.close().await;
        let zero: Vec<u32> = done
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| *p == 0)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            zero,
            (0..total).collect::<Vec<_>>(),
            "every record, in order"
        );
        assert_eq!(of(0), vec![true, false], "then resumed");
    }
}
