import CCrypto

/// SHA-256 through OpenSSL's EVP interface, with one context reused for every digest.
///
/// OpenSSL picks the SHA-NI or AVX2 code path at run time; creating a context per chunk would
/// cost more than hashing a 4 KiB block, so each worker owns one hasher for its whole life.
public final class SHA256Hasher {
    private let context: OpaquePointer
    private let algorithm: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new(), let algorithm = EVP_sha256() else {
            fatalError("OpenSSL could not create a SHA-256 context (out of memory)")
        }
        self.context = context
        self.algorithm = algorithm
    }

    deinit { EVP_MD_CTX_free(context) }

    public func digest(_ buffer: UnsafeRawBufferPointer) -> ChunkDigest {
        start()
        update(buffer)
        return finish()
    }

    public func digest(_ bytes: [UInt8]) -> ChunkDigest {
        bytes.withUnsafeBytes { digest($0) }
    }

    public func start() {
        EVP_DigestInit_ex(context, algorithm, nil)
    }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        EVP_DigestUpdate(context, base, buffer.count)
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public func finish() -> ChunkDigest {
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &out) { raw in
            var length: UInt32 = 32
            EVP_DigestFinal_ex(context, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), &length)
        }
        return ChunkDigest(w0: out.0, w1: out.1, w2: out.2, w3: out.3)
    }
}

extension SHA256Hasher {
    /// SHA-256 of a whole file, read in 4 MiB pieces.
    public static func digest(ofFile path: String) throws(CairnError) -> ChunkDigest {
        let file = try File.open(path, .readOnly)
        let hasher = SHA256Hasher()
        hasher.start()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while true {
            let n = try file.read(into: buffer, at: offset)
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += UInt64(n)
        }
        return hasher.finish()
    }
}
