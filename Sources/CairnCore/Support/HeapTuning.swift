import CLinux

/// Process-wide settings of the C heap.
public enum HeapTuning {
    /// Gives every allocation of at least `bytes` a mapping of its own, unmapped when freed.
    ///
    /// `cairn serve` frees 2 MiB frames and multi-MiB reply buffers on other threads than
    /// allocated them; glibc's heap then keeps the gaps, measured at ~100 MiB beyond the cache
    /// under nbdcopy and qemu-img. Mapped on their own, freed buffers leave the process at once.
    public static func mapAllocations(ofAtLeast bytes: Int) {
        _ = cairn_set_mmap_threshold(Int32(clamping: bytes))
    }
}
