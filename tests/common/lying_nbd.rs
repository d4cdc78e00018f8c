//! An NBD server in the test process whose write cache lies: it
//! acknowledges every flush but keeps some of the flushed blocks only in
//! its volatile cache, and a power cut drops them. It keeps its own record
//! of what it acknowledged, so a test knows exactly which blocks must read
//! back wrong, without asking blockstamp.
//!
//! The power cut and the power-on are driven through files in the
//! server's dir, so that a `--disrupt` shell command can cause them:
//!
//! - `cut` appears: the power fails. Under the lock that every request is
//!   handled and answered under, so no request is half done: every
//!   connection is shut down, the listener and its socket go, and what the
//!   cache held that was not persisted is gone. The server then removes
//!   `cut` and creates `down`.
//! - `up` appears (with the power off): the server removes `up` and
//!   `down`, and listens again [`POWER_ON_DELAY`] later, starting from
//!   what was persisted.
//!
//! The record: `promised[b]` is the content block `b` had when a flush
//! covering its latest write was acknowledged. When a verify starts (the
//! first read after a write, a flush or a power cut; the test turns off
//! every other read), the server notes the blocks whose promised content
//! is not what a read returns, leaving out the blocks written since the
//! last flush (a client may still accept their older content). That set,
//! and nothing else, is what the verify must report as lost.
//!
//! The lie: at flush number `f`, a dirty block `b` whose persisted content
//! is not all zeros and whose latest request was a write stays volatile
//! when [`lies_about`]`(b, f)`; its first write is always persisted, so a
//! lost block holds an older write of its own, never zeros.
//!
//! Discard and write-zeroes: the export offers TRIM, WRITE_ZEROES and
//! FAST_ZERO. Both zero the blocks in the cache like a write of zeros (a
//! TRIM reads zeros afterwards), and a flush never lies about them, so
//! the lying cache loses writes only. With [`Behaviour::drop_every_nth_zeroing`]
//! the server acknowledges every Nth WRITE_ZEROES without doing it and
//! records the byte ranges it dropped ([`LyingNbd::dropped_zeroings`]) and
//! the blocks a verify must then find not zeroed ([`LyingNbd::lost_zeroings`]).
//! Every TRIM and WRITE_ZEROES is logged as received
//! ([`LyingNbd::space_requests`]), so tests see the flags and splitting.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The server's block: every request must be aligned to it.
pub const BLOCK: usize = 4096;
/// How long after `up` the server listens again: long enough for the
/// command that created `up` to have ended before any client reconnects.
pub const POWER_ON_DELAY: Duration = Duration::from_millis(500);
/// How often the server looks for `cut` and `up` and new connections.
const POLL: Duration = Duration::from_millis(5);

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const FLAG_C_NO_ZEROES: u32 = 2;
const FLAG_HAS_FLAGS: u16 = 1;
const FLAG_SEND_FLUSH: u16 = 4;
const FLAG_SEND_TRIM: u16 = 1 << 5;
const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;
const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
const EINVAL: u32 = 22;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;

/// How the server misbehaves. [`LyingNbd::start`] lies about flushes and
/// nothing else.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Keep flushed blocks volatile where [`lies_about`] says so.
    pub lie_about_flushes: bool,
    /// Acknowledge the Nth, 2Nth, 3Nth... WRITE_ZEROES the server takes
    /// (in the order it takes them) without zeroing anything.
    pub drop_every_nth_zeroing: Option<u64>,
    /// Fail every WRITE_ZEROES that carries FAST_ZERO with NBD_ENOTSUP
    /// (zeroing "would be slow"), as the protocol allows.
    pub refuse_fast_zero: bool,
    /// Advertise this maximum payload (NBD_INFO_BLOCK_SIZE, minimum and
    /// preferred [`BLOCK`]) and refuse a longer TRIM or WRITE_ZEROES with
    /// NBD_EOVERFLOW, as the protocol lets a server do.
    pub max_payload: Option<u32>,
    /// Advertise neither TRIM nor WRITE_ZEROES (requests that come anyway
    /// are still logged and carried out, so a test sees that none came).
    pub hide_space_ops: bool,
}

/// A TRIM or WRITE_ZEROES as the server received it, and its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceRequest {
    pub command: u16,
    pub flags: u16,
    pub offset: u64,
    pub length: u64,
    /// The error value replied (0: success).
    pub error: u32,
}

/// Whether the flush number `flush` keeps `block` volatile (when its
/// persisted content is not all zeros): one in eight, spread by a hash.
pub fn lies_about(block: u64, flush: u64) -> bool {
    let mut x =
        block.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ flush.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    x.is_multiple_of(8)
}

/// What a verify had to find: noted at its first read.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// Power cuts before it.
    pub cuts: u64,
    /// Blocks whose acknowledged-durable content does not read back.
    pub lost: BTreeSet<u64>,
    /// Writes the server took since it last came back, before this
    /// verify (only the first verify after a power-on counts them).
    pub writes_since_power_on: Option<u64>,
}

pub struct LyingNbd {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Declared last: removed after Drop has stopped the server.
    dir: tempfile::TempDir,
}

struct Shared {
    size: u64,
    behaviour: Behaviour,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by each power cut: a request read on an older connection is
    /// never carried out.
    power_cycle: u64,
    durable: Vec<u8>,
    /// Blocks whose content is in the cache only.
    volatile: HashMap<u64, Vec<u8>>,
    /// Blocks written since the last flush (or power-on).
    dirty: HashSet<u64>,
    promised: HashMap<u64, Vec<u8>>,
    flushes: u64,
    /// Flushes that left a block volatile.
    lies: u64,
    /// The last request was a read (a verify under way).
    reading: bool,
    writes_since_power_on: u64,
    read_since_power_on: bool,
    expectations: Vec<Expectation>,
    /// Connections open now, to shut down at a power cut.
    connections: Vec<UnixStream>,
    /// Dirty blocks whose latest request zeroed them (TRIM or
    /// WRITE_ZEROES): a flush persists them truthfully.
    zeroed_dirty: HashSet<u64>,
    /// WRITE_ZEROES taken (carried out or dropped), for the every-Nth count.
    zeroings: u64,
    /// Byte ranges of the dropped WRITE_ZEROES, in the order acknowledged.
    dropped_zeroings: Vec<std::ops::Range<u64>>,
    /// Blocks whose latest request was a dropped WRITE_ZEROES, and whether
    /// a flush has been acknowledged since (a power cut before that may
    /// leave either content, so it forgets them).
    zeroing_dropped: BTreeMap<u64, bool>,
    space_requests: Vec<SpaceRequest>,
}

impl State {
    fn current(&self, block: u64) -> &[u8] {
        match self.volatile.get(&block) {
            Some(content) => content,
            None => {
                let start = block as usize * BLOCK;
                &self.durable[start..start + BLOCK]
            }
        }
    }

    fn power_cut(&mut self) {
        self.power_cycle += 1;
        for connection in self.connections.drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
        self.volatile.clear();
        self.dirty.clear();
        self.zeroed_dirty.clear();
        self.zeroing_dropped.retain(|_, flushed| *flushed);
        self.reading = false;
        self.writes_since_power_on = 0;
        self.read_since_power_on = false;
    }

    fn read(&mut self, offset: u64, length: usize) -> Vec<u8> {
        if !self.reading {
            self.reading = true;
            let lost = self
                .promised
                .iter()
                .filter(|(block, content)| {
                    !self.dirty.contains(block) && self.current(**block) != content.as_slice()
                })
                .map(|(&block, _)| block)
                .collect();
            let writes = (!self.read_since_power_on).then_some(self.writes_since_power_on);
            self.read_since_power_on = true;
            let cuts = self.power_cycle;
            self.expectations.push(Expectation {
                cuts,
                lost,
                writes_since_power_on: writes,
            });
        }
        let first = offset / BLOCK as u64;
        let mut data = Vec::with_capacity(length);
        for block in first..first + (length / BLOCK) as u64 {
            data.extend_from_slice(self.current(block));
        }
        data
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.reading = false;
        self.writes_since_power_on += 1;
        let first = offset / BLOCK as u64;
        for (i, chunk) in data.chunks_exact(BLOCK).enumerate() {
            let block = first + i as u64;
            self.volatile.insert(block, chunk.to_vec());
            self.dirty.insert(block);
            self.zeroed_dirty.remove(&block);
            self.zeroing_dropped.remove(&block);
        }
    }

    /// A TRIM or a WRITE_ZEROES carried out: the blocks read zeros.
    fn zero(&mut self, offset: u64, length: usize) {
        self.reading = false;
        let first = offset / BLOCK as u64;
        for block in first..first + (length / BLOCK) as u64 {
            self.volatile.insert(block, vec![0; BLOCK]);
            self.dirty.insert(block);
            self.zeroed_dirty.insert(block);
            self.zeroing_dropped.remove(&block);
        }
    }

    /// A WRITE_ZEROES acknowledged and not done.
    fn drop_zeroing(&mut self, offset: u64, length: usize) {
        self.reading = false;
        self.dropped_zeroings.push(offset..offset + length as u64);
        let first = offset / BLOCK as u64;
        for block in first..first + (length / BLOCK) as u64 {
            self.zeroing_dropped.insert(block, false);
        }
    }

    fn flush(&mut self, lie: bool) {
        self.reading = false;
        self.flushes += 1;
        let mut lied = false;
        let zeroed = std::mem::take(&mut self.zeroed_dirty);
        for flushed in self.zeroing_dropped.values_mut() {
            *flushed = true;
        }
        for block in std::mem::take(&mut self.dirty) {
            let content = self.volatile[&block].clone();
            let start = block as usize * BLOCK;
            let persisted = &mut self.durable[start..start + BLOCK];
            self.promised.insert(block, content.clone());
            if lie
                && !zeroed.contains(&block)
                && persisted.iter().any(|&b| b != 0)
                && lies_about(block, self.flushes)
            {
                lied = true;
                continue;
            }
            persisted.copy_from_slice(&content);
            self.volatile.remove(&block);
        }
        self.lies += u64::from(lied);
    }
}

impl LyingNbd {
    /// A server of `size_bytes` (a multiple of [`BLOCK`]), all zeros,
    /// listening on a unix socket in a temp dir of its own.
    pub fn start(size_bytes: u64) -> LyingNbd {
        LyingNbd::start_with(
            size_bytes,
            Behaviour {
                lie_about_flushes: true,
                ..Behaviour::default()
            },
        )
    }

    /// As [`LyingNbd::start`], misbehaving as `behaviour` says.
    pub fn start_with(size_bytes: u64, behaviour: Behaviour) -> LyingNbd {
        assert_eq!(size_bytes % BLOCK as u64, 0);
        assert_ne!(behaviour.drop_every_nth_zeroing, Some(0));
        let dir = tempfile::Builder::new()
            .prefix("lying-nbd")
            .tempdir()
            .expect("create temp dir");
        let shared = Arc::new(Shared {
            size: size_bytes,
            behaviour,
            state: Mutex::new(State {
                durable: vec![0; size_bytes as usize],
                ..State::default()
            }),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let listener = listen(dir.path());
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || serve(&dir, listener, &shared, &stop))
        };
        LyingNbd {
            shared,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///?socket={}",
            self.dir.path().join("nbd.sock").display()
        )
    }

    /// The server's dir, where `cut` and `up` are looked for.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A shell command that cuts the power and returns once it is off.
    pub fn cut_command(&self) -> String {
        let dir = self.dir.path().display();
        format!("touch {dir}/cut; while [ ! -e {dir}/down ]; do sleep 0.01; done")
    }

    /// A shell command that turns the power back on (the server listens
    /// again [`POWER_ON_DELAY`] later).
    pub fn power_on_command(&self) -> String {
        format!("touch {}/up", self.dir.path().display())
    }

    /// What each verify had to find, in order.
    pub fn expectations(&self) -> Vec<Expectation> {
        lock(&self.shared.state).expectations.clone()
    }

    /// The byte ranges of the WRITE_ZEROES acknowledged and not done, in
    /// the order the server took them.
    pub fn dropped_zeroings(&self) -> Vec<std::ops::Range<u64>> {
        lock(&self.shared.state).dropped_zeroings.clone()
    }

    /// The blocks (of [`BLOCK`] bytes) a verify must find not zeroed now:
    /// those whose latest request was a dropped WRITE_ZEROES and that do
    /// not read as zeros. A dropped zeroing not yet followed by a flush
    /// when the power failed is left out (either content is then allowed).
    pub fn lost_zeroings(&self) -> BTreeSet<u64> {
        let state = lock(&self.shared.state);
        state
            .zeroing_dropped
            .keys()
            .filter(|&&block| state.current(block).iter().any(|&b| b != 0))
            .copied()
            .collect()
    }

    /// Every TRIM and WRITE_ZEROES received, in order, with its answer.
    pub fn space_requests(&self) -> Vec<SpaceRequest> {
        lock(&self.shared.state).space_requests.clone()
    }

    /// Flushes acknowledged, and those that left a block volatile.
    pub fn flushes_and_lies(&self) -> (u64, u64) {
        let state = lock(&self.shared.state);
        (state.flushes, state.lies)
    }
}

impl Drop for LyingNbd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.shared.state).power_cut();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn listen(dir: &Path) -> UnixListener {
    let path = dir.join("nbd.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the lying server's socket");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    listener
}

/// The server's own thread: power cuts and power-ons, new connections.
fn serve(dir: &Path, listener: UnixListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    let mut listener = Some(listener);
    let mut power_on_at: Option<std::time::Instant> = None;
    let file = |name: &str| -> PathBuf { dir.join(name) };
    while !stop.load(Ordering::SeqCst) {
        if file("cut").exists() {
            lock(&shared.state).power_cut();
            listener = None;
            let _ = std::fs::remove_file(file("nbd.sock"));
            let _ = std::fs::remove_file(file("cut"));
            std::fs::write(file("down"), b"").expect("create down");
        }
        if listener.is_none() && power_on_at.is_none() && file("up").exists() {
            let _ = std::fs::remove_file(file("up"));
            let _ = std::fs::remove_file(file("down"));
            power_on_at = Some(std::time::Instant::now() + POWER_ON_DELAY);
        }
        if power_on_at.is_some_and(|at| std::time::Instant::now() >= at) {
            power_on_at = None;
            listener = Some(listen(dir));
        }
        match listener.as_ref().map(UnixListener::accept) {
            Some(Ok((stream, _))) => {
                stream.set_nonblocking(false).expect("blocking stream");
                let power_cycle = {
                    let mut state = lock(&shared.state);
                    state
                        .connections
                        .push(stream.try_clone().expect("clone stream"));
                    state.power_cycle
                };
                let shared = Arc::clone(shared);
                std::thread::spawn(move || {
                    let _ = connection(stream, &shared, power_cycle);
                });
            }
            Some(Err(e)) if e.kind() != ErrorKind::WouldBlock => panic!("accept: {e}"),
            _ => std::thread::sleep(POLL),
        }
    }
}

fn read_u16(stream: &mut UnixStream) -> std::io::Result<u16> {
    let mut bytes = [0; 2];
    stream.read_exact(&mut bytes)?;
    Ok(u16::from_be_bytes(bytes))
}

fn read_u32(stream: &mut UnixStream) -> std::io::Result<u32> {
    let mut bytes = [0; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_u64(stream: &mut UnixStream) -> std::io::Result<u64> {
    let mut bytes = [0; 8];
    stream.read_exact(&mut bytes)?;
    Ok(u64::from_be_bytes(bytes))
}

fn option_reply(
    stream: &mut UnixStream,
    option: u32,
    reply: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(20 + data.len());
    bytes.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    bytes.extend_from_slice(&option.to_be_bytes());
    bytes.extend_from_slice(&reply.to_be_bytes());
    bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
    bytes.extend_from_slice(data);
    stream.write_all(&bytes)
}

/// One client: the fixed-newstyle handshake, then requests until it
/// disconnects or the power fails.
fn connection(mut stream: UnixStream, shared: &Shared, power_cycle: u64) -> std::io::Result<()> {
    let transmission_flags = if shared.behaviour.hide_space_ops {
        FLAG_HAS_FLAGS | FLAG_SEND_FLUSH
    } else {
        FLAG_HAS_FLAGS
            | FLAG_SEND_FLUSH
            | FLAG_SEND_TRIM
            | FLAG_SEND_WRITE_ZEROES
            | FLAG_SEND_FAST_ZERO
    };
    let mut hello = Vec::new();
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    stream.write_all(&hello)?;
    let client_flags = read_u32(&mut stream)?;
    loop {
        if read_u64(&mut stream)? != IHAVEOPT {
            return Ok(());
        }
        let option = read_u32(&mut stream)?;
        let length = read_u32(&mut stream)?;
        if length > 65536 {
            return Ok(());
        }
        let mut data = vec![0; length as usize];
        stream.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                let mut reply = Vec::new();
                reply.extend_from_slice(&shared.size.to_be_bytes());
                reply.extend_from_slice(&transmission_flags.to_be_bytes());
                if client_flags & FLAG_C_NO_ZEROES == 0 {
                    reply.extend_from_slice(&[0; 124]);
                }
                stream.write_all(&reply)?;
                break;
            }
            OPT_GO | OPT_INFO => {
                let mut info = Vec::new();
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&shared.size.to_be_bytes());
                info.extend_from_slice(&transmission_flags.to_be_bytes());
                option_reply(&mut stream, option, REP_INFO, &info)?;
                if let Some(maximum) = shared.behaviour.max_payload {
                    let mut sizes = Vec::new();
                    sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                    sizes.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                    sizes.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                    sizes.extend_from_slice(&maximum.to_be_bytes());
                    option_reply(&mut stream, option, REP_INFO, &sizes)?;
                }
                option_reply(&mut stream, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    break;
                }
            }
            OPT_ABORT => {
                option_reply(&mut stream, option, REP_ACK, &[])?;
                return Ok(());
            }
            _ => option_reply(&mut stream, option, REP_ERR_UNSUP, &[])?,
        }
    }
    loop {
        if read_u32(&mut stream)? != REQUEST_MAGIC {
            return Ok(());
        }
        let flags = read_u16(&mut stream)?;
        let command = read_u16(&mut stream)?;
        let cookie = read_u64(&mut stream)?;
        let offset = read_u64(&mut stream)?;
        let length = read_u32(&mut stream)? as usize;
        let in_range = offset.is_multiple_of(BLOCK as u64)
            && length.is_multiple_of(BLOCK)
            && offset + length as u64 <= shared.size;
        let payload = if command == CMD_WRITE {
            if length > 64 << 20 {
                return Ok(());
            }
            let mut payload = vec![0; length];
            stream.read_exact(&mut payload)?;
            payload
        } else {
            Vec::new()
        };
        if command == CMD_DISC {
            return Ok(());
        }
        // Carried out and answered under the lock, so a power cut comes
        // between two requests, never inside one.
        let mut state = lock(&shared.state);
        if state.power_cycle != power_cycle {
            return Ok(());
        }
        let mut reply = Vec::with_capacity(16);
        reply.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        let behaviour = shared.behaviour;
        let error = match command {
            CMD_READ | CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES if !in_range => EINVAL,
            CMD_TRIM | CMD_WRITE_ZEROES
                if behaviour
                    .max_payload
                    .is_some_and(|maximum| length > maximum as usize) =>
            {
                EOVERFLOW
            }
            CMD_WRITE_ZEROES if flags & CMD_FLAG_FAST_ZERO != 0 && behaviour.refuse_fast_zero => {
                ENOTSUP
            }
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES => 0,
            _ => EINVAL,
        };
        if matches!(command, CMD_TRIM | CMD_WRITE_ZEROES) {
            state.space_requests.push(SpaceRequest {
                command,
                flags,
                offset,
                length: length as u64,
                error,
            });
        }
        reply.extend_from_slice(&error.to_be_bytes());
        reply.extend_from_slice(&cookie.to_be_bytes());
        if error == 0 {
            match command {
                CMD_READ => reply.extend_from_slice(&state.read(offset, length)),
                CMD_WRITE => state.write(offset, &payload),
                CMD_TRIM => state.zero(offset, length),
                CMD_WRITE_ZEROES => {
                    state.zeroings += 1;
                    let dropped = behaviour
                        .drop_every_nth_zeroing
                        .is_some_and(|n| state.zeroings.is_multiple_of(n));
                    if dropped {
                        state.drop_zeroing(offset, length);
                    } else {
                        state.zero(offset, length);
                    }
                }
                _ => state.flush(behaviour.lie_about_flushes),
            }
        }
        stream.write_all(&reply)?;
    }
}
