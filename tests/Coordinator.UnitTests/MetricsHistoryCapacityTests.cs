// MetricsHistory's points per rank: rank 0 keeps 4096 at any world size; the others share about a million points, so a
// world of 16384 ranks holds about 150 MB of history, not 10 GB.
namespace Coordinator.UnitTests;

public class MetricsHistoryCapacityTests
{
    [Theory]
    [InlineData(0, 2, 4096)]
    [InlineData(0, 65536, 4096)]
    [InlineData(1, 2, 4096)]
    [InlineData(1, 257, 4096)]   // 256 other ranks x 4096 = 2^20
    [InlineData(1, 258, 4080)]
    [InlineData(1, 16384, 64)]
    [InlineData(16383, 16384, 64)]
    [InlineData(1, 65536, 16)]
    public void Rank_0_keeps_4096_points_and_the_others_share_a_million(int rank, int worldSize, int points) =>
        Assert.Equal(points, MetricsHistory.PointsPerRank(rank, worldSize));

    [Theory]
    [InlineData(8192)]
    [InlineData(16384)]
    [InlineData(65536)]
    public void A_large_worlds_history_stays_within_about_a_million_points(int worldSize)
    {
        long total = Enumerable.Range(0, worldSize).Sum(rank => (long)MetricsHistory.PointsPerRank(rank, worldSize));

        Assert.InRange(total, 1L << 20, (1L << 20) + 4096);
    }
}
