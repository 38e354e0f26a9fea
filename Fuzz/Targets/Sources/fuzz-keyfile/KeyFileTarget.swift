import CairnCore
import FuzzSupport

/// Key files (`keys/ID`, each archive label's copies) and their paper form (`cairn key import`):
/// both come from outside, the paper form typed by a person.
///
/// Input: one options byte, then the text. Options bit 0 reads it as a paper key, else as a key
/// file. Whatever parses must survive its round trips, or an export would write what its own
/// import refuses: written again it parses to the same key file, and its paper form parses back
/// to the same sealed key (only `created` and `hint` are not carried, and hex comes back in lower case). No passphrase is tried:
/// scrypt's cost is bounded by the parameter checks `parse` makes, not something to spend per input.
@main
enum KeyFileTarget {
    static func main() {
        FuzzDriver.run { buffer in
            var input = FuzzInput(buffer)
            let options = input.byte()
            let body = input.rest()
            let parsed: KeyFile?
            if options & 1 != 0 {
                parsed = try? PaperKey.parse(String(decoding: body, as: UTF8.self), created: "2026-11-26T03:00:00Z")
            } else {
                parsed = try? KeyFile.parse(body, name: "keys/fuzz")
            }
            guard let file = parsed else { return }
            guard let bytes = try? file.fileBytes(), let again = try? KeyFile.parse(bytes, name: "keys/again"),
                again == file
            else { fatalError("a key file that parsed does not parse again once written") }
            guard var paper = try? PaperKey.parse(PaperKey.text(of: file), created: file.created) else {
                fatalError("the paper form of a key file that parsed does not parse")
            }
            paper.hint = file.hint
            guard lowercasedHex(paper) == lowercasedHex(file) else {
                fatalError("the paper form does not carry the same sealed key")
            }
        }
    }

    /// The key file with its hex fields in lower case: a key file may spell them in either case
    /// (the bytes are what count), the paper form writes lower case.
    static func lowercasedHex(_ file: KeyFile) -> KeyFile {
        var file = file
        file.repository = file.repository.lowercased()
        file.id = file.id.lowercased()
        file.kdf.salt = file.kdf.salt.lowercased()
        file.nonce = file.nonce.lowercased()
        file.wrapped = file.wrapped.lowercased()
        file.fingerprint = file.fingerprint.lowercased()
        return file
    }
}
