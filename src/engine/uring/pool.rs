//! The registered buffer pool: IO buffers registered with the ring, each
//! tagged with its pool so `submit` can tell a registered buffer from any
//! other (see the engine's module docs on lending them out).

use std::collections::HashMap;

use io_uring::IoUring;

use crate::buf::AlignedBuf;

/// The kernel's limit on registered buffers (IORING_MAX_REG_BUFFERS) ...
const MAX_REGISTERED_BUFFERS: usize = 1 << 14;
/// ... and on the size of one registered buffer.
const MAX_REGISTERED_BUFFER_BYTES: usize = 1 << 30;

/// Registered buffers of `capacity` bytes, the ones not lent out.
pub(super) struct BufferPool {
    /// Distinguishes this pool's buffers from another engine's.
    id: u64,
    pub(super) free: Vec<AlignedBuf>,
    /// Start address of each registered buffer and its index in the ring.
    pub(super) index_by_addr: HashMap<usize, u16>,
    pub(super) capacity: usize,
}

impl BufferPool {
    fn empty() -> BufferPool {
        BufferPool {
            id: 0,
            free: Vec::new(),
            index_by_addr: HashMap::new(),
            capacity: 0,
        }
    }

    /// The registered index of `buf`, when it is one of the pool's.
    pub(super) fn fixed_index(&self, buf: &AlignedBuf) -> Option<u16> {
        // The tag proves the allocation is the registered one (and this
        // pool's); the address check guards against a forged tag.
        let (pool, index) = buf.registration()?;
        let registered = *self.index_by_addr.get(&(buf.as_ptr() as usize))?;
        (pool == self.id && index == registered && buf.capacity() == self.capacity).then_some(index)
    }
}

/// Allocate and register `count` buffers of `max_io_bytes`. On failure the
/// pool is empty and the note says why.
pub(super) fn register_pool(
    ring: &IoUring,
    count: usize,
    max_io_bytes: usize,
) -> (BufferPool, Option<String>) {
    let count = count.min(MAX_REGISTERED_BUFFERS);
    if max_io_bytes == 0 || max_io_bytes > MAX_REGISTERED_BUFFER_BYTES {
        return (
            BufferPool::empty(),
            Some(format!("{max_io_bytes}-byte IOs cannot be registered")),
        );
    }
    let mut free: Vec<AlignedBuf> = (0..count).map(|_| AlignedBuf::new(max_io_bytes)).collect();
    let capacity = free[0].capacity();
    let iovecs: Vec<libc::iovec> = free
        .iter_mut()
        .map(|buf| libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        })
        .collect();
    // SAFETY: each iovec covers one whole allocation owned by the pool; the
    // engine unregisters them in Drop before the pool frees them, and a
    // buffer lent out comes back through submit/recycle (engine module docs).
    match unsafe { ring.submitter().register_buffers(&iovecs) } {
        Ok(()) => {
            static NEXT_POOL_ID: std::sync::atomic::AtomicU64 =
                std::sync::atomic::AtomicU64::new(1);
            let id = NEXT_POOL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (i, buf) in free.iter_mut().enumerate() {
                buf.set_registration(Some((id, i as u16)));
            }
            let index_by_addr = free
                .iter()
                .enumerate()
                .map(|(i, buf)| (buf.as_ptr() as usize, i as u16))
                .collect();
            (
                BufferPool {
                    id,
                    free,
                    index_by_addr,
                    capacity,
                },
                None,
            )
        }
        Err(error) => {
            let why = if error.raw_os_error() == Some(libc::ENOMEM) {
                format!(
                    "{error}; raise RLIMIT_MEMLOCK (ulimit -l) above {} KiB",
                    count * capacity / 1024
                )
            } else {
                error.to_string()
            };
            let note =
                format!("io_uring buffers not registered ({why}); using plain reads and writes");
            (BufferPool::empty(), Some(note))
        }
    }
}
