//! Page-aligned IO buffers.
//!
//! O_DIRECT (and io_uring with registered buffers) needs memory aligned to the
//! device's logical block size; 4096 covers every logical sector size we
//! accept, so every buffer that can reach a target is 4 KiB aligned.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every IO buffer: the largest logical sector size we support.
pub const IO_ALIGN: usize = 4096;

/// A heap buffer aligned to [`IO_ALIGN`], zero-initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    /// (pool, index) when this allocation is registered with an io_uring
    /// ring. A fresh allocation that happens to reuse the address of a
    /// dropped registered buffer has none, so it can never be mistaken for
    /// the registered memory.
    registration: Option<(u64, u16)>,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (capacity rounded up to the alignment).
    pub fn new(len: usize) -> Self {
        let capacity = len.div_ceil(IO_ALIGN).max(1) * IO_ALIGN;
        let layout = Layout::from_size_align(capacity, IO_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len,
            capacity,
            registration: None,
        }
    }

    /// Bytes the allocation can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The io_uring registration of this allocation, if an engine made one.
    pub fn registration(&self) -> Option<(u64, u16)> {
        self.registration
    }

    /// For engines: mark this allocation as registered buffer `index` of
    /// buffer pool `pool`.
    pub fn set_registration(&mut self, registration: Option<(u64, u16)>) {
        self.registration = registration;
    }

    /// Change the visible length within the capacity (contents are kept).
    ///
    /// # Panics
    /// If `len` exceeds the capacity: a programming error, not an input error.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "AlignedBuf::set_len beyond capacity");
        self.len = len;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity, IO_ALIGN).expect("buffer layout");
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for `capacity` >= `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_resizable() {
        let mut buf = AlignedBuf::new(5000);
        assert_eq!(buf.as_ptr() as usize % IO_ALIGN, 0);
        assert_eq!(buf.len(), 5000);
        assert_eq!(buf.capacity(), 8192);
        assert!(buf.iter().all(|&b| b == 0));
        buf.set_len(8192);
        buf[8191] = 7;
        assert_eq!(buf[8191], 7);
    }
}
