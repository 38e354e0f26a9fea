import CCrypto

/// HKDF-SHA256 (RFC 5869): one strong key stretched into independent keys, one per purpose.
public enum HKDF {
    /// `count` bytes of HKDF-SHA256 (extract with `salt`, expand with `info`) of `key`.
    public static func sha256(key: [UInt8], salt: [UInt8], info: [UInt8], count: Int) -> [UInt8] {
        precondition(!key.isEmpty && count > 0 && count <= 255 * 32)
        var out = [UInt8](repeating: 0, count: count)
        let ok = key.withUnsafeBytes { k in
            salt.withUnsafeBytes { s in
                info.withUnsafeBytes { i in
                    out.withUnsafeMutableBytes { o in
                        let target = o.baseAddress!.assumingMemoryBound(to: UInt8.self)
                        return cairn_hkdf_sha256(
                            bytes(k, or: target), k.count, bytes(s, or: target), s.count, bytes(i, or: target),
                            i.count, target, count)
                    }
                }
            }
        }
        guard ok == 1 else { fatalError("OpenSSL's HKDF-SHA256 failed") }
        return out
    }

    /// The 32-byte key for `purpose` (e.g. "cairn/v1/id") derived from `key` with `salt`.
    static func key(from key: SecretKey, salt: [UInt8], purpose: String) -> SecretKey {
        SecretKey(bytes: sha256(key: key.bytes, salt: salt, info: Array(purpose.utf8), count: SecretKey.byteCount))
    }
}
