//! Jobs and prev hashes: new work becomes a job on every channel (standard channels of a
//! connection that takes extended jobs share one group-channel job, 05 §5.3.16), a channel
//! just opened gets the current work, and the job history stays bounded.

use std::sync::Arc;

use bitcoin::TxMerkleNode;
use bitcoin::hashes::Hash;

use super::channels::ChannelKind;
use super::{Session, State};
use crate::block::header::{header_bytes, header_midstate};
use crate::mining::work::Work;
use crate::wire::mining::{
    NewExtendedMiningJob, NewMiningJob, REQUIRES_STANDARD_JOBS, SetNewPrevHash,
};
use crate::wire::{B0_64K, Seq0_255};

/// A job as this connection knows it.
#[derive(Debug, Clone)]
pub(super) struct SessionJob {
    pub(super) job_id: u32,
    pub(super) work: Arc<Work>,
    /// nTime floor announced for it (jobs are activated as soon as they are sent).
    pub(super) min_ntime: u32,
}

/// A standard channel's view of a job: its merkle root, and the SHA-256 state after the first
/// 64 header bytes (version, prev hash, most of the root) so a share hashes one block less.
#[derive(Debug, Clone)]
pub(super) struct StandardJob {
    pub(super) job_id: u32,
    pub(super) version: u32,
    pub(super) root: TxMerkleNode,
    pub(super) head: [u32; 8],
}

impl Session {
    /// New work from the pool. On a new prev hash, the job goes out as a future job followed
    /// by SetNewPrevHash; on the same tip, as a job active at once (with min_ntime).
    pub fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) {
        let new_tip = self
            .current
            .as_ref()
            .is_none_or(|c| c.prev_hash != work.prev_hash);
        self.current = Some(work.clone());
        let job_id = self.push_job(work);
        if new_tip {
            self.tip = Some(work.prev_hash);
            for ch in &mut self.channels {
                ch.seen.clear();
            }
        }
        if self.state != State::Ready {
            return;
        }
        // Standard channels of a connection that takes extended jobs get one job for the
        // whole group (05 §5.3.16); the pool still keeps each channel's merkle root.
        let group = self.flags & REQUIRES_STANDARD_JOBS == 0;
        let mut grouped = false;
        for idx in 0..self.channels.len() {
            if group && self.channels[idx].kind == ChannelKind::Standard {
                self.record_root(idx, job_id, work);
                grouped = true;
            } else {
                self.send_job(idx, job_id, work, new_tip);
            }
        }
        if grouped {
            let msg = self.extended_job(self.group_channel_id, job_id, work, new_tip);
            self.send(&msg);
        }
        if new_tip {
            for idx in 0..self.channels.len() {
                if !(group && self.channels[idx].kind == ChannelKind::Standard) {
                    let id = self.channels[idx].id;
                    self.send_prev_hash(id, job_id, work);
                }
            }
            if grouped {
                self.send_prev_hash(self.group_channel_id, job_id, work);
            }
        }
        let _ = now_ms;
    }

    /// Forgets jobs beyond `max_jobs` (product API name); called whenever a job is added, so
    /// the history of a connection never grows past the bound.
    pub fn cleanup_old_jobs(&mut self) {
        let max = self.config.max_jobs.max(1);
        while self.jobs.len() > max {
            self.jobs.pop_front();
        }
        for ch in &mut self.channels {
            while ch.roots.len() > max {
                ch.roots.pop_front();
            }
        }
    }

    /// Number of jobs remembered (bounded by `max_jobs`).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The id of the newest job and the work it is on (the job [`on_work`](Self::on_work)
    /// just made), for drivers that name work by its pool-wide id.
    pub fn latest_job(&self) -> Option<(u32, &Arc<Work>)> {
        self.jobs.back().map(|j| (j.job_id, &j.work))
    }

    fn extended_job<'w>(
        &self,
        channel_id: u32,
        job_id: u32,
        work: &'w Work,
        future: bool,
    ) -> NewExtendedMiningJob<'w> {
        NewExtendedMiningJob {
            channel_id,
            job_id,
            min_ntime: if future { None } else { Some(work.cur_time) },
            version: work.version,
            version_rolling_allowed: self.config.version_rolling,
            merkle_path: Seq0_255::new(&work.merkle_path).unwrap_or_default(),
            coinbase_tx_prefix: B0_64K::new(&work.coinbase.prefix).unwrap_or_default(),
            coinbase_tx_suffix: B0_64K::new(&work.coinbase.suffix).unwrap_or_default(),
        }
    }

    /// Computes and remembers a standard channel's merkle root for a job.
    fn record_root(&mut self, idx: usize, job_id: u32, work: &Work) -> [u8; 32] {
        let max = self.config.max_jobs.max(1);
        let ch = &mut self.channels[idx];
        let root = work.merkle_root(&ch.extranonce_prefix, &[]);
        let head = header_midstate(&header_bytes(
            work.version,
            work.prev_hash.as_byte_array(),
            root.as_byte_array(),
            0,
            0,
            0,
        ));
        ch.roots.push_back(StandardJob {
            job_id,
            version: work.version,
            root,
            head,
        });
        while ch.roots.len() > max {
            ch.roots.pop_front();
        }
        root.to_byte_array()
    }

    fn push_job(&mut self, work: &Arc<Work>) -> u32 {
        let job_id = self.next_job_id;
        self.next_job_id = self.next_job_id.wrapping_add(1).max(1);
        self.jobs.push_back(SessionJob {
            job_id,
            work: work.clone(),
            min_ntime: work.cur_time,
        });
        self.cleanup_old_jobs();
        job_id
    }

    /// A channel just opened gets the current work as a future job and the prev hash.
    pub(super) fn send_current_work_to(&mut self, idx: usize) {
        let Some(job) = self.jobs.back().cloned() else {
            return;
        };
        // The newest job's id is new to this channel: it goes out as a future job followed
        // by SetNewPrevHash, the order the spec requires for a channel's first job.
        self.send_job(idx, job.job_id, &job.work, true);
        let id = self.channels[idx].id;
        self.send_prev_hash(id, job.job_id, &job.work);
    }

    fn send_job(&mut self, idx: usize, job_id: u32, work: &Arc<Work>, future: bool) {
        match self.channels[idx].kind {
            ChannelKind::Extended => {
                let msg = self.extended_job(self.channels[idx].id, job_id, work, future);
                self.send(&msg);
            }
            ChannelKind::Standard => {
                let merkle_root = self.record_root(idx, job_id, work);
                let msg = NewMiningJob {
                    channel_id: self.channels[idx].id,
                    job_id,
                    min_ntime: if future { None } else { Some(work.cur_time) },
                    version: work.version,
                    merkle_root,
                };
                self.send(&msg);
            }
        }
    }

    fn send_prev_hash(&mut self, channel_id: u32, job_id: u32, work: &Arc<Work>) {
        let msg = SetNewPrevHash {
            channel_id,
            job_id,
            prev_hash: work.prev_hash.to_byte_array(),
            min_ntime: work.cur_time,
            nbits: work.nbits,
        };
        self.send(&msg);
    }
}
