import CCrypto

/// The cost of scrypt (RFC 7914): `n` (CPU and memory, a power of two), `r` (block size) and
/// `p` (parallelism). Stored in every key file, so a reader uses what the writer chose.
public struct ScryptParameters: Codable, Sendable, Equatable {
    public var n: UInt64
    public var r: UInt32
    public var p: UInt32

    public init(n: UInt64, r: UInt32, p: UInt32) {
        self.n = n
        self.r = r
        self.p = p
    }

    /// N=2^17, r=8, p=1: 128 MiB and about half a second on the project machine, stronger
    /// than the N=2^16 of kopia and Proxmox Backup Server.
    public static let standard = ScryptParameters(n: 1 << 17, r: 8, p: 1)

    /// The most memory a key file may ask for: a hostile file must not exhaust the machine.
    public static let memoryCap: UInt64 = 1 << 30

    /// Bytes scrypt needs, as OpenSSL counts them: 128·r·(N + 2) for V, 128·r·p for B.
    public var memoryBytes: UInt64 { 128 * UInt64(r) * (n + 2) + 128 * UInt64(r) * UInt64(p) }

    /// Why these parameters are refused, or nil: N a power of two from 2^10 to 2^22, r from 1
    /// to 32, p from 1 to 16, and at most `memoryCap` bytes.
    public var problem: String? {
        guard n.nonzeroBitCount == 1, (UInt64(1) << 10)...(UInt64(1) << 22) ~= n else {
            return "scrypt N \(n) is not a power of two from 1024 to 4194304"
        }
        guard (1...32).contains(r), (1...16).contains(p) else { return "scrypt r \(r), p \(p) are out of range" }
        guard memoryBytes <= Self.memoryCap else {
            return "scrypt N \(n), r \(r) needs \(memoryBytes >> 20) MiB, more than the 1024 MiB Cairn allows"
        }
        return nil
    }
}

/// scrypt through EVP_KDF "SCRYPT", always with an explicit memory limit.
public enum Scrypt {
    /// What is passed as `maxmem_bytes`: the cap on parameters plus slack. OpenSSL's older
    /// `EVP_PBE_scrypt` with maxmem 0 would allow only 32 MB, less than N=2^16, r=8 needs.
    static let memoryLimit: UInt64 = ScryptParameters.memoryCap + (1 << 20)

    /// `count` bytes derived from `passphrase` and `salt`. Refuses parameters outside
    /// `ScryptParameters.problem`'s bounds (`.usage`); fails `.io` if OpenSSL cannot allocate.
    public static func derive(
        passphrase: [UInt8], salt: [UInt8], parameters: ScryptParameters, count: Int
    ) throws(CairnError) -> [UInt8] {
        if let problem = parameters.problem { throw CairnError(.usage, problem) }
        precondition(count > 0 && !salt.isEmpty)
        var out = [UInt8](repeating: 0, count: count)
        let ok = passphrase.withUnsafeBytes { pass in
            salt.withUnsafeBytes { s in
                out.withUnsafeMutableBytes { o in
                    let target = o.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    return cairn_scrypt(
                        bytes(pass, or: target), pass.count, bytes(s, or: target), s.count, parameters.n,
                        parameters.r, parameters.p, memoryLimit, target, count)
                }
            }
        }
        guard ok == 1 else {
            throw CairnError(
                .io,
                "scrypt (N \(parameters.n), r \(parameters.r)) failed: it needs \(parameters.memoryBytes >> 20) MiB")
        }
        return out
    }
}
