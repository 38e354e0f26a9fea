import CairnCore
import Testing

/// Retention rules on synthetic restore points: PBS semantics (counts add up), protection,
/// keep-within, calendar periods in UTC.
@Suite struct RetentionPolicyTests {
    /// One restore point per day at 03:00 UTC for `days` days ending 2026-11-26.
    static func daily(_ days: Int, perDay: Int = 1) -> [RestorePointID] {
        let last = Timestamp(parsing: "2026-11-26T03:00:00Z")!.seconds
        var out: [RestorePointID] = []
        for d in 0..<days {
            for k in 0..<perDay {
                out.append(
                    RestorePointID(group: "vm", time: Timestamp(seconds: last - Int64(d) * 86400 - Int64(k) * 3600)))
            }
        }
        return out
    }

    @Test func keepLastKeepsTheNewest() {
        var policy = RetentionPolicy()
        policy.keepLast = 3
        let points = Self.daily(10)
        let decisions = policy.apply(to: points, protected: [])
        #expect(decisions.count == 10)
        #expect(decisions.prefix(3).allSatisfy { $0.keep && $0.reason == "keep-last 3" })
        #expect(decisions.dropFirst(3).allSatisfy { !$0.keep })
        #expect(decisions.first?.id.description == "vm@2026-11-26T03:00:00Z", "newest first")
    }

    @Test func periodCountsAddUpAsInPBS() {
        var policy = RetentionPolicy()
        policy.keepDaily = 7
        policy.keepWeekly = 4
        let decisions = policy.apply(to: Self.daily(60), protected: [])
        let kept = decisions.filter(\.keep)
        #expect(kept.count == 11, "7 daily + 4 weekly, none shared: \(kept.map(\.id.description))")
        #expect(kept.filter { $0.reason.hasPrefix("keep-daily") }.count == 7)
        let weekly = kept.filter { $0.reason.hasPrefix("keep-weekly") }
        #expect(weekly.count == 4)
        // The daily points cover 2026-11-20 … 2026-11-26, i.e. the weeks of 11-16 and 11-23:
        // weekly ones start with the week of 2026-11-09.
        #expect(
            weekly.map(\.reason) == [
                "keep-weekly week of 2026-11-09", "keep-weekly week of 2026-11-02", "keep-weekly week of 2026-10-26",
                "keep-weekly week of 2026-10-19",
            ])
        // The newest point of each week stands for it (Sunday).
        #expect(weekly.first?.id.description == "vm@2026-11-15T03:00:00Z")
    }

    @Test func newestOfEachPeriodStandsForIt() {
        var policy = RetentionPolicy()
        policy.keepDaily = 3
        let decisions = policy.apply(to: Self.daily(5, perDay: 2), protected: [])
        let kept = decisions.filter(\.keep).map(\.id.description)
        #expect(kept == ["vm@2026-11-26T03:00:00Z", "vm@2026-11-25T03:00:00Z", "vm@2026-11-24T03:00:00Z"])
        let sameDay = decisions.first { $0.id.description == "vm@2026-11-26T02:00:00Z" }!
        #expect(!sameDay.keep && sameDay.reason.contains("2026-11-26"))
    }

    @Test func protectedIsKeptAndUsesNoCount() {
        var policy = RetentionPolicy()
        policy.keepLast = 2
        let points = Self.daily(6)
        let protectedID = points[0]  // the newest
        let old = points[5]
        let decisions = policy.apply(to: points, protected: [protectedID, old])
        #expect(decisions.filter(\.keep).count == 4)
        #expect(decisions.first { $0.id.description == old.description }?.reason == "protected")
        #expect(
            decisions.filter { $0.reason == "keep-last 2" }.map(\.id.description) == [
                points[1].description, points[2].description,
            ])
    }

    @Test func keepWithinIsRelativeToTheNewest() {
        var policy = RetentionPolicy()
        policy.keepWithin = 2 * 86400
        let decisions = policy.apply(to: Self.daily(10), protected: [])
        #expect(decisions.filter(\.keep).count == 3, "the newest and the two days before it")
        #expect(decisions[0].reason == "keep-within 2d")
    }

    @Test func monthlyAndYearly() {
        var policy = RetentionPolicy()
        policy.keepMonthly = 2
        policy.keepYearly = 2
        let decisions = policy.apply(to: Self.daily(400), protected: [])
        let kept = decisions.filter(\.keep)
        #expect(kept.map(\.reason) == ["keep-monthly 2026-11", "keep-monthly 2026-10", "keep-yearly 2025"])
        #expect(kept.last?.id.description == "vm@2025-12-31T03:00:00Z")
    }

    @Test func emptyPolicyIsRecognised() {
        #expect(RetentionPolicy().isEmpty)
        var p = RetentionPolicy()
        p.keepYearly = 1
        #expect(!p.isEmpty)
    }

    @Test(arguments: [
        ("2026-11-23T00:00:00Z", "week of 2026-11-23"), ("2026-11-29T23:59:59Z", "week of 2026-11-23"),
        ("2026-11-30T00:00:00Z", "week of 2026-11-30"), ("2027-01-01T12:00:00Z", "week of 2026-12-28"),
    ])
    func weeksStartOnMonday(time: String, label: String) {
        #expect(RetentionPolicy.Period.weekly.label(of: Timestamp(parsing: time)!) == label)
    }
}
