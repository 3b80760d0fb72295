//! The one connection that writes the SQLite file, and the task that owns it.
//!
//! Every change goes through here, one transaction at a time — SQLite's
//! own model (one writer; in WAL mode readers never wait) — which gives
//! guarantees a pool of writing connections cannot:
//!
//! - **No transaction outlives a failure.** On a full disk SQLite may roll
//!   a transaction back by itself. A pooled sqlx connection does not notice
//!   (sqlx counts the depth itself): its next "transaction" is a savepoint
//!   inside a transaction nobody commits, so callers are told their rows
//!   are stored, every other writer gets "database is locked", and the rows
//!   vanish with the connection. Here this task begins and ends every
//!   transaction with plain statements, and after any failure it closes the
//!   connection (which rolls back whatever SQLite left open) and opens a
//!   fresh one for the next write.
//! - **Write health.** A failed write marks the store unable to write
//!   ([`WriteHealth`]); from then on writes fail at once with the same
//!   reason (callers answer 503 fast instead of each waiting on the disk)
//!   while a one-row probe write runs every [`TICK`] until the disk takes
//!   writes again.
//! - **Group commit.** Match writes waiting when a transaction starts all
//!   go into it: one transaction rewrites each page it touches into the
//!   WAL once, so under load many matches share one. The batch is two
//!   round trips to sqlx's worker thread, not one per statement
//!   ([`write_matches`]): each await is a wake-up of this thread.
//! - **A bounded WAL.** Between transactions, every 250 ms, a PASSIVE
//!   checkpoint copies the WAL back into the database; once the WAL holds
//!   more than [`WAL_RESTART_FRAMES`] frames, a RESTART checkpoint (which
//!   waits a moment for readers on old snapshots) makes the next writes
//!   start over at the beginning of the file, and `journal_size_limit` cuts
//!   the file back to [`super::JOURNAL_SIZE_LIMIT`]. (A PASSIVE checkpoint
//!   alone never resets the WAL while readers come and go, so under load it
//!   only grows; a TRUNCATE to zero each time would make every write after
//!   it allocate disk blocks again.) Readers are short statements, so the
//!   RESTART gets its turn.

use std::any::Any;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::matches::{MatchJob, write_matches};
use crate::store::{StoreError, StoreResult, WriteHealth};

/// How often the task checkpoints and, while the store cannot write,
/// probes. Under a sustained load of matches the WAL takes about 60 MiB a
/// second (each match touches a few randomly keyed index pages), so a
/// checkpoint every quarter second is what keeps it near its bound.
const TICK: Duration = Duration::from_millis(250);

/// WAL frames (pages) past which the writer resets the WAL with a RESTART
/// checkpoint: 2,048 frames of 4 KiB, about 8 MiB.
pub const WAL_RESTART_FRAMES: i64 = 2_048;

/// How long a RESTART checkpoint waits for readers on older snapshots.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// Quiet seconds after which the writer gives its page cache back.
const IDLE_SHRINK: Duration = Duration::from_secs(10);

/// Most matches one group commit takes (more wait for the next one).
const GROUP_COMMIT_MAX_MATCHES: usize = 2_000;

/// A change to run in a transaction of its own, answering a boxed value.
pub type OpFn = Box<
    dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<Box<dyn Any + Send>>>
        + Send,
>;

/// Work for the writer.
pub enum Job {
    /// Match claims or records: group-committed with the other waiting ones.
    Matches(MatchJob),
    /// Any other change, in a transaction of its own.
    Op {
        run: OpFn,
        done: oneshot::Sender<StoreResult<Box<dyn Any + Send>>>,
    },
    /// The migrations (they manage their own transactions).
    Migrate(oneshot::Sender<StoreResult<()>>),
}

/// Hands work to the writer task.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::UnboundedSender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

impl WriterHandle {
    /// Opens the writing connection (creating the file if needed) and
    /// starts the writer on a thread of its own; it ends when the last
    /// handle is dropped.
    pub async fn start(
        options: SqliteConnectOptions,
        health: std::sync::Arc<WriteHealth>,
    ) -> StoreResult<Self> {
        let conn = options.connect().await?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            options,
            conn: Some(conn),
            health,
            last_write: std::time::Instant::now(),
            shrunk: true,
        };
        // A thread of its own: every statement of a transaction is an await,
        // and on the shared runtime each would queue behind the HTTP tasks
        // of a busy node — under load, matches were written at half speed
        // and the pools fell behind the joins.
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer.run(rx)),
                    Err(e) => tracing::error!(error = %e, "the SQLite writer cannot start"),
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("the SQLite writer cannot start: {e}")))?;
        Ok(Self { jobs })
    }

    pub fn send(&self, job: Job) -> StoreResult<()> {
        self.jobs.send(job).map_err(|_| stopped())
    }

    /// Runs `op` in a transaction of its own; answers what it answered once
    /// the transaction is committed.
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>>
        + Send
        + 'static,
    ) -> StoreResult<T> {
        let (done, answer) = oneshot::channel();
        let run: OpFn = Box::new(move |conn| {
            Box::pin(async move { op(conn).await.map(|t| Box::new(t) as Box<dyn Any + Send>) })
        });
        self.send(Job::Op { run, done })?;
        let value = answer.await.map_err(|_| stopped())??;
        value
            .downcast::<T>()
            .map(|t| *t)
            .map_err(|_| StoreError::Corrupt("SQLite writer answered the wrong type".into()))
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        self.send(Job::Migrate(done))?;
        answer.await.map_err(|_| stopped())?
    }
}

/// SQLite allocates with the C library's malloc, not the binary's
/// allocator, and glibc keeps freed memory for itself: ask it to hand back
/// what SQLite just freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_c_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only releases free memory of the C heap; it
    // takes no pointers and may be called from any thread.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_c_heap() {}

/// Starts a write transaction (taking the write lock at once).
async fn begin(conn: &mut SqliteConnection) -> StoreResult<()> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    Ok(())
}

async fn commit(conn: &mut SqliteConnection) -> StoreResult<()> {
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

struct Writer {
    options: SqliteConnectOptions,
    /// `None` after a failure: the next write opens a fresh connection.
    conn: Option<SqliteConnection>,
    health: std::sync::Arc<WriteHealth>,
    /// When matches were last written (the bulk of the writes: the worker's
    /// small upkeep writes every second do not count), and whether the
    /// cache was given back since.
    last_write: std::time::Instant,
    shrunk: bool,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut later: Vec<Job> = Vec::new();
        loop {
            let first = tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                _ = tick.tick() => {
                    if self.health.is_failing() {
                        self.probe().await;
                    } else {
                        self.checkpoint().await;
                        self.shrink_when_idle().await;
                    }
                    continue;
                }
            };
            // Match writes waiting now share one transaction; other jobs
            // met on the way run after it, in order.
            let mut batch = Vec::new();
            match first {
                Job::Matches(m) => batch.push(m),
                other => later.push(other),
            }
            if !batch.is_empty() {
                (self.last_write, self.shrunk) = (std::time::Instant::now(), false);
                let mut size = batch[0].len();
                while size < GROUP_COMMIT_MAX_MATCHES {
                    match jobs.try_recv() {
                        Ok(Job::Matches(m)) => {
                            size += m.len();
                            batch.push(m);
                        }
                        Ok(other) => later.push(other),
                        Err(_) => break,
                    }
                }
                self.matches(batch).await;
            }
            for job in later.drain(..) {
                match job {
                    Job::Matches(m) => self.matches(vec![m]).await,
                    Job::Op { run, done } => {
                        let result = self.op(run).await;
                        let _ = done.send(result);
                    }
                    Job::Migrate(done) => {
                        let result = self.migrate().await;
                        let _ = done.send(result);
                    }
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// The writing connection, opened again after a failure.
    async fn conn(&mut self) -> StoreResult<&mut SqliteConnection> {
        if self.conn.is_none() {
            self.conn = Some(self.options.connect().await?);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Forgets the connection after a failure; closing it rolls back any
    /// transaction SQLite may still have open on it.
    async fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// The reason to give a write while the store cannot write.
    fn refusal(&self) -> Option<StoreError> {
        self.health
            .failure()
            .map(|f| StoreError::Unavailable(format!("SQLite cannot write: {}", f.reason)))
    }

    /// After a transaction: on failure closes the connection (rolling back
    /// whatever SQLite left open), and notes the outcome.
    async fn settle<T>(&mut self, result: &StoreResult<T>) {
        // Only the outcome crosses the await (a reference to a boxed answer
        // would make this future need `Sync` answers).
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.settle_outcome(outcome).await;
    }

    async fn settle_outcome(&mut self, outcome: StoreResult<()>) {
        if outcome.is_err() {
            self.reset().await;
        }
        self.health.note(&outcome);
    }

    async fn matches(&mut self, batch: Vec<MatchJob>) {
        if let Some(refusal) = self.refusal() {
            let reason = refusal.to_string();
            for job in batch {
                job.answer(Err(StoreError::Unavailable(reason.clone())));
            }
            return;
        }
        let result = async {
            // (It begins and commits its transaction itself: see there.)
            write_matches(self.conn().await?, &batch).await
        }
        .await;
        self.settle(&result).await;
        match result {
            Ok(outcomes) => {
                for (job, claims) in batch.into_iter().zip(outcomes) {
                    job.answer(Ok(claims));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for job in batch {
                    job.answer(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
    }

    async fn op(&mut self, run: OpFn) -> StoreResult<Box<dyn Any + Send>> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let result = async {
            let conn = self.conn().await?;
            begin(conn).await?;
            let value = run(&mut *conn).await?;
            commit(conn).await?;
            Ok(value)
        }
        .await;
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.settle_outcome(outcome).await;
        result
    }

    async fn migrate(&mut self) -> StoreResult<()> {
        let result = async {
            let conn = self.conn().await?;
            super::MIGRATOR
                .run_direct(conn)
                .await
                .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
        }
        .await;
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    /// One small real write: succeeds only if the disk takes writes.
    async fn probe(&mut self) {
        let at = crate::domain::now_millis();
        let result: StoreResult<()> = async {
            let conn = self.conn().await?;
            begin(conn).await?;
            sqlx::query(
                "INSERT INTO write_probe (id, at) VALUES (1, ?) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(at)
            .execute(&mut *conn)
            .await?;
            commit(conn).await
        }
        .await;
        self.settle(&result).await;
    }

    /// After a busy spell, once match writes have stopped for [`IDLE_SHRINK`],
    /// gives the page cache back (a flood fills it; SQLite keeps it).
    async fn shrink_when_idle(&mut self) {
        if self.shrunk || self.last_write.elapsed() < IDLE_SHRINK {
            return;
        }
        self.shrunk = true;
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = sqlx::query("PRAGMA shrink_memory")
                .execute(&mut *conn)
                .await
        {
            tracing::debug!(error = %e, "giving SQLite's page cache back failed");
        }
        trim_c_heap();
    }

    /// PASSIVE every time; RESTART once the WAL is long (see the module
    /// docs). A checkpoint that fails is tried again next tick.
    async fn checkpoint(&mut self) {
        let result: StoreResult<()> = async {
            let conn = self.conn().await?;
            let (_, wal_frames, _): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *conn)
                    .await?;
            if wal_frames > WAL_RESTART_FRAMES {
                sqlx::query(&format!(
                    "PRAGMA busy_timeout = {}",
                    CHECKPOINT_WAIT.as_millis()
                ))
                .execute(&mut *conn)
                .await?;
                let restarted =
                    sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(RESTART)")
                        .fetch_one(&mut *conn)
                        .await;
                sqlx::query(&format!(
                    "PRAGMA busy_timeout = {}",
                    super::BUSY_TIMEOUT.as_millis()
                ))
                .execute(&mut *conn)
                .await?;
                let (busy, _, _) = restarted?;
                if busy != 0 {
                    tracing::debug!(
                        wal_frames,
                        "the WAL could not be reset yet (readers); next second"
                    );
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
            self.reset().await;
        }
    }
}
