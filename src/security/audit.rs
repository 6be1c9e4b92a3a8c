//! The audit trail. Every request and command leaves one record; each
//! record carries the hash of the one before it (SHA-256 over the record
//! and that hash), so an edit, a removal or a reordering breaks the chain
//! where it happened and `custlake audit verify` names the first broken
//! link.
//!
//! A record is durable before the response it describes completes: it is
//! appended to a local journal (`current.ndjson`) and fsynced, several
//! concurrent records with one fsync. Every process of the lake appends to
//! the same journal under an exclusive file lock, so the chain is one
//! chain. Now and then the journal is sealed (renamed, the chain's head
//! kept in `head.json`) and the sealed file is moved into the Delta table
//! `audit_log`; a sealed file left by a crash is moved by the next process
//! that flushes. Moving is an upsert by event id, so moving twice is
//! harmless.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SecurityError;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub event_id: String,
    /// RFC 3339, microseconds, UTC.
    pub at: String,
    pub principal: String,
    pub role: Option<String>,
    pub via: Option<String>,
    pub action: String,
    pub object: Option<String>,
    pub detail: Option<String>,
    pub params: Option<String>,
    pub tables: Option<String>,
    pub format: Option<String>,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub outcome: String,
    pub status: Option<i64>,
    pub code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub client: Option<String>,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// A record of `action` by `principal`, now, with a fresh event id.
    pub fn new(principal: &super::Principal, action: &str, outcome: &str) -> Self {
        Self {
            event_id: fresh_id(),
            at: now(),
            principal: principal.user.clone(),
            role: Some(principal.role.clone()),
            via: Some(principal.via.clone()),
            action: action.to_string(),
            outcome: outcome.to_string(),
            ..Self::default()
        }
    }

    /// A record of `action` by a caller whose credential was not good
    /// (`anonymous`), now, with a fresh event id.
    pub fn anonymous(action: &str, outcome: &str) -> Self {
        Self {
            event_id: fresh_id(),
            at: now(),
            principal: "anonymous".into(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            ..Self::default()
        }
    }

    /// The hash this record should carry: SHA-256 of its canonical JSON
    /// with `hash` empty (which includes `prev_hash`).
    pub fn expected_hash(&self) -> String {
        let mut r = self.clone();
        r.hash.clear();
        let json = serde_json::to_string(&r).unwrap_or_default();
        hex::encode(Sha256::digest(json.as_bytes()))
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A new event id (128 random bits, hex).
pub fn fresh_id() -> String {
    let mut b = [0u8; 16];
    if getrandom_02::getrandom(&mut b).is_err() {
        // Unique enough without randomness: time and process.
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        return format!("{t:x}-{:x}", std::process::id());
    }
    hex::encode(b)
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> SecurityError {
    let what = what.display().to_string();
    move |e| SecurityError::Audit(format!("{what}: {e}"))
}

/// The chain's head after the last record written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// The journal directory and its files.
#[derive(Debug)]
pub struct JournalDir {
    pub dir: PathBuf,
    /// The head after this process's last append, and the journal file's
    /// length and identity then (another process's append or seal shows
    /// as a change of either, and the head is read again).
    cache: std::sync::Mutex<Option<Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    len: u64,
    id: u64,
    head: Head,
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.ino()
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> u64 {
    0
}

impl JournalDir {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SecurityError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir,
            cache: std::sync::Mutex::new(None),
        })
    }

    fn current(&self) -> PathBuf {
        self.dir.join("current.ndjson")
    }

    fn head_file(&self) -> PathBuf {
        self.dir.join("head.json")
    }

    /// Hold the journal's lock (every process of the lake takes turns).
    fn lock(&self) -> Result<File, SecurityError> {
        let p = self.dir.join("journal.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        f.lock().map_err(io(&p))?;
        Ok(f)
    }

    /// The sealed files not yet moved into the table, oldest first.
    pub fn sealed(&self) -> Result<Vec<PathBuf>, SecurityError> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("sealed-") && n.ends_with(".ndjson"))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The position of the last record when the journal was last sealed
    /// (0: never sealed).
    pub fn sealed_seq(&self) -> Result<u64, SecurityError> {
        Ok(self.sealed_head()?.seq)
    }

    /// The head kept in `head.json` when the journal was last sealed.
    fn sealed_head(&self) -> Result<Head, SecurityError> {
        match std::fs::read(self.head_file()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| SecurityError::Audit(format!("head.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Head {
                seq: 0,
                hash: GENESIS.into(),
            }),
            Err(e) => Err(io(&self.head_file())(e)),
        }
    }

    /// The head of the chain in the open journal `f` of `len` bytes, from
    /// its last whole line (or `head.json` when it has none), and the
    /// length up to that line's end: a line cut short by a crash is cut off
    /// before anything is appended after it.
    fn tail_head(&self, f: &mut File, len: u64) -> Result<(Head, u64), SecurityError> {
        let path = self.current();
        f.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        let mut buf = Vec::new();
        Read::by_ref(f)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(io(&path))?;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return Ok((self.sealed_head()?, 0));
        };
        let start = buf[..end]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let last: AuditRecord = serde_json::from_slice(&buf[start..end]).map_err(|e| {
            SecurityError::Audit(format!(
                "{}: the last record is unreadable: {e}",
                path.display()
            ))
        })?;
        Ok((
            Head {
                seq: last.seq,
                hash: last.hash,
            },
            end as u64 + 1,
        ))
    }

    /// Chain and append records, fsynced before returning.
    pub fn append(&self, records: &mut [AuditRecord]) -> Result<(), SecurityError> {
        let _lock = self.lock()?;
        let path = self.current();
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let meta = f.metadata().map_err(io(&path))?;
        let len = meta.len();
        let id = file_id(&meta);
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| c.len == len && c.id == id);
        let (mut head, valid) = match cached {
            Some(c) => (c.head, len),
            None => self.tail_head(&mut f, len)?,
        };
        if valid < len {
            f.set_len(valid).map_err(io(&path))?;
        }
        f.seek(SeekFrom::Start(valid)).map_err(io(&path))?;
        let mut buf = Vec::new();
        for r in records.iter_mut() {
            r.seq = head.seq + 1;
            r.prev_hash = head.hash.clone();
            r.hash = r.expected_hash();
            head = Head {
                seq: r.seq,
                hash: r.hash.clone(),
            };
            serde_json::to_writer(&mut buf, r)
                .map_err(|e| SecurityError::Audit(format!("record: {e}")))?;
            buf.push(b'\n');
        }
        f.write_all(&buf).map_err(io(&path))?;
        f.sync_data().map_err(io(&path))?;
        if let Ok(mut c) = self.cache.lock() {
            *c = Some(Cached {
                len: valid + buf.len() as u64,
                id,
                head,
            });
        }
        Ok(())
    }

    /// Seal the current journal (if it holds records): it becomes
    /// `sealed-<first>-<last>.ndjson` and the head is kept.
    pub fn seal(&self) -> Result<Option<PathBuf>, SecurityError> {
        let _lock = self.lock()?;
        let records = read_records(&self.current())?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(None);
        };
        let head = Head {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        let tmp = self.dir.join("head.json.tmp");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&serde_json::to_vec(&head).unwrap_or_default())
            .map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, self.head_file()).map_err(io(&tmp))?;
        let sealed = self
            .dir
            .join(format!("sealed-{:016}-{:016}.ndjson", first.seq, last.seq));
        std::fs::rename(self.current(), &sealed).map_err(io(&sealed))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Some(sealed))
    }

    /// Every record still in the journal (sealed files, then the current).
    pub fn pending(&self) -> Result<Vec<AuditRecord>, SecurityError> {
        let mut out = Vec::new();
        for p in self.sealed()? {
            out.extend(read_records(&p)?);
        }
        out.extend(read_records(&self.current())?);
        Ok(out)
    }
}

/// The records of a journal file (none if it does not exist). A last line
/// cut short by a crash mid-write is not a record and is left out.
pub fn read_records(path: &Path) -> Result<Vec<AuditRecord>, SecurityError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io(path))?;
    let n = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditRecord>(&line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == n => {}
            Err(e) => {
                return Err(SecurityError::Audit(format!(
                    "{}: line {} is not a record: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

/// The first broken link of a chain, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub event_id: String,
    pub why: String,
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub broken: Option<Broken>,
}

/// Check the chain of `table` (the records already moved into
/// `audit_log`) followed by `journal` (those not yet moved), up to
/// `written` (the head the journal kept when it was last sealed: records
/// up to it were written, so a chain ending earlier lost its end). A
/// record in both must be the same record.
pub fn verify(table: Vec<AuditRecord>, journal: Vec<AuditRecord>, written: u64) -> Verified {
    let mut by_seq: std::collections::BTreeMap<u64, AuditRecord> = Default::default();
    let mut broken: Option<Broken> = None;
    let note = |b: Broken, broken: &mut Option<Broken>| {
        if broken.as_ref().is_none_or(|x| b.seq < x.seq) {
            *broken = Some(b);
        }
    };
    // The journal is written in order: a record after a later one was moved.
    for w in journal.windows(2) {
        if w[1].seq <= w[0].seq {
            note(
                Broken {
                    seq: w[1].seq,
                    event_id: w[1].event_id.clone(),
                    why: format!("the journal holds it after record {} (reordered)", w[0].seq),
                },
                &mut broken,
            );
        }
    }
    for r in table.into_iter().chain(journal) {
        match by_seq.get(&r.seq) {
            Some(seen) if seen != &r => note(
                Broken {
                    seq: r.seq,
                    event_id: r.event_id.clone(),
                    why: format!(
                        "two different records hold position {} (events {} and {})",
                        r.seq, seen.event_id, r.event_id
                    ),
                },
                &mut broken,
            ),
            Some(_) => {}
            None => {
                by_seq.insert(r.seq, r);
            }
        }
    }
    let records = by_seq.len();
    let first_seq = by_seq.keys().next().copied().unwrap_or(0);
    let last_seq = by_seq.keys().next_back().copied().unwrap_or(0);
    let mut prev: Option<&AuditRecord> = None;
    for r in by_seq.values() {
        let link = |why: String| Broken {
            seq: r.seq,
            event_id: r.event_id.clone(),
            why,
        };
        if r.expected_hash() != r.hash {
            note(
                link("the record was altered: its hash does not match its contents".into()),
                &mut broken,
            );
            break;
        }
        match prev {
            None if r.seq == 1 && r.prev_hash != GENESIS => {
                note(
                    link("the first record does not start the chain".into()),
                    &mut broken,
                );
                break;
            }
            None => {}
            Some(p) if r.seq != p.seq + 1 => {
                note(
                    link(format!(
                        "records {} to {} are missing (removed)",
                        p.seq + 1,
                        r.seq - 1
                    )),
                    &mut broken,
                );
                break;
            }
            Some(p) if r.prev_hash != p.hash => {
                note(
                    link(format!(
                        "it does not follow record {} (removed, replaced or reordered)",
                        p.seq
                    )),
                    &mut broken,
                );
                break;
            }
            Some(_) => {}
        }
        prev = Some(r);
    }
    if broken.is_none() && last_seq < written {
        broken = Some(Broken {
            seq: last_seq + 1,
            event_id: String::new(),
            why: format!(
                "records {} to {written} were written but are gone (removed from the end)",
                last_seq + 1
            ),
        });
    }
    Verified {
        records,
        first_seq,
        last_seq,
        broken,
    }
}

/// Appends records from any task: a thread of its own writes them, many
/// at once with one fsync, and answers each when it is durable.
#[derive(Clone)]
pub struct Journal {
    dir: Arc<JournalDir>,
    tx: std::sync::mpsc::Sender<Job>,
}

struct Job {
    record: AuditRecord,
    done: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({})", self.dir.dir.display())
    }
}

impl Journal {
    pub fn open(dir: JournalDir) -> Self {
        let dir = Arc::new(dir);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let writer = dir.clone();
        std::thread::Builder::new()
            .name("custlake-audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < 4096 {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let mut records: Vec<AuditRecord> =
                        jobs.iter().map(|j| j.record.clone()).collect();
                    let result = writer.append(&mut records);
                    for (j, r) in jobs.into_iter().zip(records) {
                        let _ = j.done.send(match &result {
                            Ok(()) => Ok(r.seq),
                            Err(e) => Err(e.to_string()),
                        });
                    }
                }
            })
            .ok();
        Self { dir, tx }
    }

    pub fn dir(&self) -> &JournalDir {
        &self.dir
    }

    /// Append `record`; returns once it is on disk, with its position.
    pub async fn record(&self, record: AuditRecord) -> Result<u64, SecurityError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job { record, done })
            .map_err(|_| SecurityError::Audit("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| SecurityError::Audit("the audit writer has stopped".into()))?
            .map_err(SecurityError::Audit)
    }
}

/// Read a file's tail (for tests that cut a journal short).
pub fn file_len(path: &Path) -> u64 {
    File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .unwrap_or(0)
}

/// The whole text of a journal file (tests and tamper checks).
pub fn read_text(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(action: &str) -> AuditRecord {
        AuditRecord {
            event_id: fresh_id(),
            at: now(),
            principal: "ann".into(),
            action: action.into(),
            outcome: "ok".into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_tampering_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let j = JournalDir::new(tmp.path()).unwrap();
        let mut batch: Vec<AuditRecord> = (0..5).map(|i| rec(&format!("a{i}"))).collect();
        j.append(&mut batch[..2]).unwrap();
        j.seal().unwrap();
        j.append(&mut batch[2..]).unwrap();
        let all = j.pending().unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(verify(vec![], all.clone(), 0).broken, None);

        let mut edited = all.clone();
        edited[2].detail = Some("SELECT 1".into());
        assert_eq!(verify(vec![], edited, 0).broken.unwrap().seq, 3);

        let mut removed = all.clone();
        removed.remove(1);
        let b = verify(vec![], removed, 0).broken.unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.why.contains("missing"), "{}", b.why);

        // Swap the contents of 2 and 3 but keep their positions.
        let mut reordered = all.clone();
        let (a, b) = (reordered[1].clone(), reordered[2].clone());
        reordered[1] = AuditRecord { seq: 2, ..b };
        reordered[2] = AuditRecord { seq: 3, ..a };
        assert_eq!(verify(vec![], reordered, 0).broken.unwrap().seq, 2);

        // A record in the table differing from the journal's.
        let mut table = all[..2].to_vec();
        table[1].principal = "mallory".into();
        assert_eq!(verify(table, all.clone(), 0).broken.unwrap().seq, 2);
        // The last records cut off, below the head a seal kept.
        let cut = verify(vec![], all[..3].to_vec(), 5).broken.unwrap();
        assert_eq!(cut.seq, 4);
    }

    #[test]
    fn a_torn_last_line_is_not_a_record() {
        let tmp = tempfile::tempdir().unwrap();
        let j = JournalDir::new(tmp.path()).unwrap();
        j.append(&mut [rec("x"), rec("y")]).unwrap();
        let mut f = OpenOptions::new().append(true).open(j.current()).unwrap();
        f.write_all(b"{\"seq\":3,\"eve").unwrap();
        assert_eq!(j.pending().unwrap().len(), 2);
    }
}
