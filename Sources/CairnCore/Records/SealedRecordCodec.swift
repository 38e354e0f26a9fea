/// The codec of an encrypted repository: compress as `ZstdRecordCodec` does, then seal with
/// AES-256-GCM under a key used for this one record (docs/FORMAT.md, "Sealed records").
///
/// Stored data: salt (32 random bytes) ‖ ciphertext ‖ tag (16). The record key is
/// HMAC-SHA256(data key, "cairn/v1/record" ‖ salt) and the nonce is twelve zero bytes: every key
/// seals one message only, so no nonce state is kept across runs or writers and GCM's 2^32
/// random-nonce budget never binds. The associated data binds what the record says about itself
/// outside the sealed bytes (`RecordBinding`: digest, raw length, kind, compression, a frame's
/// member list), so a record moved under another digest or relabelled fails to open, with the
/// same `.damaged` error as a record whose bytes were altered.
///
/// One per worker: the cipher and MAC contexts and the scratch buffers are made once.
final class SealedRecordCodec: RecordCodec {
    static let saltSize = 32
    /// Bytes a sealed record adds to its compressed data: salt and tag.
    static let overhead = saltSize + AESGCM.tagSize
    /// Prefix of the message the record key is the MAC of.
    static let keyPurpose = Array("cairn/v1/record".utf8)
    /// Associated data: digest (32), raw length u32, kind u8, compression u8, then the member list.
    static let bindingHeaderSize = 38

    private let inner: ZstdRecordCodec
    private let cipher = AESGCM()
    private let keyMAC: HMACSHA256
    /// "cairn/v1/record" ‖ salt, rewritten per record.
    private let keyMessage: UnsafeMutableRawBufferPointer
    private let aad: UnsafeMutableRawBufferPointer
    private let nonce: UnsafeMutableRawBufferPointer
    /// Decrypted, still compressed bytes; grown (rarely) to the largest record opened.
    private var scratch: UnsafeMutableRawBufferPointer?

    /// `level` for a codec that encodes; nil for one that only opens.
    init(dataKey: SecretKey, level: Int32? = nil) {
        inner = ZstdRecordCodec(level: level)
        keyMAC = HMACSHA256(key: dataKey)
        keyMessage = .allocate(byteCount: Self.keyPurpose.count + Self.saltSize, alignment: 16)
        keyMessage.copyBytes(from: Self.keyPurpose)
        aad = .allocate(
            byteCount: Self.bindingHeaderSize + RecordMembers.countSize + PackFormat.maxFrameMembers
                * RecordMembers.entrySize,
            alignment: 16)
        nonce = .allocate(byteCount: AESGCM.nonceSize, alignment: 16)
        nonce.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        keyMessage.deallocate()
        aad.deallocate()
        nonce.deallocate()
        scratch?.deallocate()
    }

    func storedBound(_ rawLength: Int) -> Int { inner.storedBound(rawLength) + Self.overhead }

    func seal(
        _ plain: UnsafeRawBufferPointer, binding: RecordBinding, into stored: UnsafeMutableRawBufferPointer
    ) -> (compression: ChunkCompression, count: Int) {
        precondition(stored.count >= storedBound(plain.count))
        let salt = UnsafeMutableRawBufferPointer(rebasing: stored[0..<Self.saltSize])
        SecureRandom.fill(salt)
        let body = UnsafeMutableRawBufferPointer(rebasing: stored[Self.saltSize..<(stored.count - AESGCM.tagSize)])
        let (compression, count) = inner.compress(plain, into: body)
        let key = recordKey(salt: UnsafeRawBufferPointer(salt))
        let associated = associatedData(binding, compression)
        // In place: the compressed bytes become the ciphertext, the tag follows them.
        cipher.seal(
            UnsafeRawBufferPointer(rebasing: body[0..<count]), key: key, nonce: UnsafeRawBufferPointer(nonce),
            aad: associated,
            into: UnsafeMutableRawBufferPointer(
                rebasing: stored[Self.saltSize..<(Self.saltSize + count + AESGCM.tagSize)]))
        return (compression, count + Self.overhead)
    }

    func open(
        _ stored: UnsafeRawBufferPointer, _ compression: ChunkCompression, binding: RecordBinding,
        into output: UnsafeMutableRawBufferPointer
    ) throws(CairnError) -> UnsafeRawBufferPointer {
        guard stored.count >= Self.overhead else {
            throw CairnError(.damaged, "holds \(stored.count) bytes, too few for a sealed record")
        }
        let count = stored.count - Self.overhead
        let key = recordKey(salt: UnsafeRawBufferPointer(rebasing: stored[0..<Self.saltSize]))
        let sealed = UnsafeRawBufferPointer(rebasing: stored[Self.saltSize...])
        let associated = associatedData(binding, compression)
        let target: UnsafeMutableRawBufferPointer
        if compression == .none {
            guard count == output.count else {
                throw CairnError(.damaged, "holds \(count) sealed bytes, not \(output.count)")
            }
            target = output
        } else {
            target = UnsafeMutableRawBufferPointer(rebasing: scratchBuffer(count)[0..<count])
        }
        guard cipher.open(sealed, key: key, nonce: UnsafeRawBufferPointer(nonce), aad: associated, into: target)
        else {
            throw CairnError(
                .damaged, "fails authentication: it was altered or moved, or not sealed with this repository's key")
        }
        if compression == .none { return UnsafeRawBufferPointer(output) }
        return try inner.decompress(UnsafeRawBufferPointer(target), compression, into: output)
    }

    /// HMAC-SHA256(data key, "cairn/v1/record" ‖ salt), without allocating.
    private func recordKey(salt: UnsafeRawBufferPointer) -> SecretKey {
        UnsafeMutableRawBufferPointer(rebasing: keyMessage[Self.keyPurpose.count...]).copyMemory(from: salt)
        return SecretKey(macOutput: keyMAC.authenticate(UnsafeRawBufferPointer(keyMessage)))
    }

    /// The associated data of a record, laid out in the codec's own buffer.
    private func associatedData(_ binding: RecordBinding, _ compression: ChunkCompression) -> UnsafeRawBufferPointer {
        precondition(binding.memberList.count <= aad.count - Self.bindingHeaderSize && binding.rawLength <= UInt32.max)
        binding.digest.store(to: aad, at: 0)
        aad.storeBytes(of: UInt32(binding.rawLength).littleEndian, toByteOffset: 32, as: UInt32.self)
        aad.storeBytes(of: binding.kind.rawValue, toByteOffset: 36, as: UInt8.self)
        aad.storeBytes(of: compression.rawValue, toByteOffset: 37, as: UInt8.self)
        let end = Self.bindingHeaderSize + binding.memberList.count
        if binding.memberList.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: aad[Self.bindingHeaderSize..<end]).copyMemory(
                from: binding.memberList)
        }
        return UnsafeRawBufferPointer(rebasing: aad[0..<end])
    }

    private func scratchBuffer(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if let scratch, scratch.count >= count { return scratch }
        scratch?.deallocate()
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1 << 16), alignment: 64)
        scratch = grown
        return grown
    }
}
