// Split builds one ring per colour, ranked by (key, parent rank); its all-reduce covers only the members.
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives.UnitTests;

public class SplitTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Even_and_odd_ranks_reduce_separately(bool reversedKeys)
    {
        var results = Ranks.Run(4, (rank, comm) =>
        {
            var key = reversedKeys ? -rank : rank;
            using var sub = comm.Split(rank % 2, key);
            using var t = torch.tensor(new double[] { rank + 1, 10 * (rank + 1) });
            sub.AllReduce(t);
            using var gathered = torch.empty(sub.WorldSize, ScalarType.Int64);
            using var me = torch.tensor(new long[] { rank });
            sub.AllGather(me, gathered);
            comm.Barrier(); // the parent still works after the split
            return (sub.Rank, sub.WorldSize, Sum: t.data<double>().ToArray(), Members: gathered.data<long>().ToArray());
        });
        for (var rank = 0; rank < 4; rank++)
        {
            var members = rank % 2 == 0 ? new long[] { 0, 2 } : [1, 3];
            if (reversedKeys) Array.Reverse(members);
            var r = results[rank];
            Assert.Equal(2, r.WorldSize);
            Assert.Equal(Array.IndexOf(members, rank), r.Rank);
            Assert.Equal(members, r.Members);
            var expected = members.Sum(m => m + 1.0);
            Assert.Equal(new[] { expected, 10 * expected }, r.Sum);
        }
    }
}
