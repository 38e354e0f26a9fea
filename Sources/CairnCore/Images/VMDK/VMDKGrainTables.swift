/// What a run of a sparse extent's bytes holds.
enum VMDKGrain: Equatable {
    /// Not allocated here: the parent's bytes, or zeros.
    case unallocated
    /// Known zeros (a zeroed grain; an SEsparse zero or unmapped grain), reported without a read.
    case zero
    /// Stored as is: the run's first byte is this byte of the extent's file.
    case data(byteOffset: UInt64)
    /// Inside a compressed grain whose marker is at this sector (hosted stream extents only).
    case compressed(sector: UInt64)
}

/// A sparse extent's grain directory and tables: hosted sparse (KDMV), vmfsSparse (COWD) and
/// SEsparse extents all map grains through a directory of grain tables, so the run walk the
/// image's extent walk (`VMDKImage+Mapping.swift`) calls is written once, here, over each
/// format's own table and entry lookup, which checks what it finds against the file.
///
/// A run covers what one table says: a missing table is unallocated to its end; otherwise
/// consecutive grains of one kind (unallocated, zero, or data stored back to back in the file)
/// are one run. ESXi's COWD grains are one sector, so a grain-at-a-time walk would cost a lookup
/// per 512 bytes.
protocol VMDKGrainTables: AnyObject {
    /// The extent's file, which `.data` runs are read from.
    var file: File { get }
    /// Bytes one grain holds.
    var grainBytes: UInt64 { get }
    /// Entries in one grain table.
    var entriesPerTable: UInt64 { get }

    /// The table cache slot of grain table `index` (loaded and checked on a miss), or nil where
    /// the directory has no table.
    func table(_ index: Int) throws(CairnError) -> Int?

    /// What grain `grainIndex` holds, by its entry in the table in `slot`; `.data` names the
    /// grain's first byte.
    func grain(_ grainIndex: UInt64, inTable slot: Int) throws(CairnError) -> VMDKGrain
}

extension VMDKGrainTables {
    /// What the extent's bytes from `offset` (< its capacity) hold, and for how many bytes: at
    /// least 1, at most `limit`, never past the end of a compressed grain; a `.data` run is
    /// contiguous in the file.
    func run(at offset: UInt64, limit: UInt64) throws(CairnError) -> (grain: VMDKGrain, length: UInt64) {
        var grainIndex = offset / grainBytes
        let tableIndex = grainIndex / entriesPerTable
        // Capacities are at most 2^40 sectors and tables cover at most 2^33 bytes: no overflow.
        let end = min(offset + limit, (tableIndex + 1) * entriesPerTable * grainBytes)
        guard let slot = try table(Int(tableIndex)) else { return (.unallocated, end - offset) }
        var current: VMDKGrain?
        var position = offset
        while position < end {
            var piece = try grain(grainIndex, inTable: slot)
            if case .data(let start) = piece {
                piece = .data(byteOffset: start + (position - grainIndex * grainBytes))
            }
            if let current {
                guard Self.continues(current, with: piece, after: position - offset) else { break }
            } else {
                current = piece
            }
            grainIndex += 1
            position = min(grainIndex * grainBytes, end)
            if case .compressed = piece { break }  // a compressed run is one grain
        }
        return (current!, position - offset)
    }

    /// Whether `piece`, `distance` bytes after the start of `run`, extends it.
    private static func continues(_ run: VMDKGrain, with piece: VMDKGrain, after distance: UInt64) -> Bool {
        switch (run, piece) {
        case (.unallocated, .unallocated), (.zero, .zero): return true
        case (.data(let start), .data(let next)): return next == start + distance
        default: return false
        }
    }
}
