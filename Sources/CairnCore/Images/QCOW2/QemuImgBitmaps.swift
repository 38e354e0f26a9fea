/// Adds and removes persistent bitmaps with QEMU's own `qemu-img bitmap`, for checkpoints Cairn
/// manages on offline images (`cairn backup --cbt`).
///
/// Cairn's qcow2 reader never writes to an image. Creating a bitmap means allocating clusters,
/// updating refcounts and rewriting the directory with the autoclear dance QEMU does; QEMU's tool
/// does exactly that, takes QEMU's image locks (so it fails on an image a VM holds), and is what
/// an administrator would run by hand.
public enum QemuImgBitmaps {
    /// Adds the persistent, enabled bitmap `name` to `image`.
    public static func add(_ name: String, to image: String) throws(CairnError) {
        try run(["bitmap", "--add", "--enable", "-f", "qcow2", image, name], what: "add bitmap \(name) to \(image)")
    }

    /// Removes the persistent bitmap `name` from `image`.
    public static func remove(_ name: String, from image: String) throws(CairnError) {
        try run(["bitmap", "--remove", "-f", "qcow2", image, name], what: "remove bitmap \(name) from \(image)")
    }

    private static func run(_ arguments: [String], what: String) throws(CairnError) {
        let outcome: ChildProcess.Outcome
        do throws(CairnError) {
            outcome = try ChildProcess.run("qemu-img", arguments, maxOutput: 4096)
        } catch {
            throw CairnError(.io, "cannot run qemu-img to \(what) (is qemu-utils installed?)", cause: error.cause)
        }
        guard outcome.status == 0 else {
            let text =
                String(decoding: outcome.errorOutput, as: UTF8.self)
                .split(separator: "\n").first.map(String.init) ?? "exit status \(outcome.status)"
            throw CairnError(.io, "qemu-img could not \(what)", cause: text)
        }
    }
}
