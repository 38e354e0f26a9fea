/// The upgrade of repositories made before configs named their format features.
///
/// Frames came before the `features` list, so a repository without one may hold frame records.
/// Such a repository opens as before; the first time this Cairn writes to it (backup, archive
/// import, gc, rebuild-index), its config gets the list, written as `cairn repair` writes it:
/// checksum filled in, `config` then `config.copy`, each atomically. A config that is damaged,
/// unsealed or whose copy differs is left for `cairn repair`, which adds the list too, so the
/// upgrade never writes over the only good copy.
extension Repository {
    /// Whether the config lacks a feature this Cairn writes.
    public var needsFeatureMark: Bool {
        FormatFeature.adding(config.features) != (config.features ?? [])
    }

    /// Adds the features this Cairn writes to the config, once, before the first write.
    public func markFeatures() throws(CairnError) {
        guard needsFeatureMark, configHealth.isHealthy else { return }
        var marked = config
        marked.features = FormatFeature.adding(config.features)
        marked.checksum = nil
        try marked.write(to: storage)
    }
}
