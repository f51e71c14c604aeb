// Each parallelism step alone: the groups of a layout, a model narrowed to its vocabulary shard, the backend's name.
using Collectives;
using Job;
using Oec;
using Rank.Model;
using Rank.Parallel;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class ParallelizeTests
{
    /// <summary>A group's (rank, size) and the sum of its members' world ranks (from an all-reduce over it); null: no group.</summary>
    static (int Rank, int Size, double MemberSum)? Describe(ICommunicator? group, int worldRank)
    {
        if (group is null) return null;
        using var sum = tensor(new[] { (float)worldRank });
        group.AllReduce(sum, ReduceOp.Sum);
        return (group.Rank, group.WorldSize, sum.item<float>());
    }

    [Theory]
    [InlineData(2, 2)]
    [InlineData(4, 1)]
    [InlineData(1, 4)]
    [InlineData(2, 3)]
    public void SplitGroups_joins_each_rank_to_its_replicas_shards_and_to_its_shards_replicas(int dp, int tp)
    {
        var layout = new ParallelLayout(dp * tp, tp);

        var seen = ShardedVocabularyTests.RunRanks(dp * tp, (rank, comm) =>
        {
            using var groups = Parallelize.SplitGroups(comm, layout);
            return (Vocab: Describe(groups.Vocab, rank), Data: Describe(groups.Data, rank));
        });

        for (int r = 0; r < dp * tp; r++)
        {
            int replica = r / tp, shard = r % tp;
            // the vocabulary group: ranks replica * tp + 0..tp-1; the data group: ranks 0..dp-1 * tp + shard
            Assert.Equal(tp > 1 ? (shard, tp, replica * tp * tp + tp * (tp - 1) / 2.0) : null, seen[r].Vocab);
            Assert.Equal(dp > 1 ? (replica, dp, tp * dp * (dp - 1) / 2.0 + dp * shard) : null, seen[r].Data);
        }
    }

    [Fact]
    public void One_process_has_no_groups_and_no_data_parallelism()
    {
        using var groups = Parallelize.SplitGroups(null, new ParallelLayout(1));
        using var model = new Gpt(new ModelOptions(), 512, maxSequenceLength: 16);

        Assert.Null(groups.Vocab);
        Assert.Null(groups.Data);
        Assert.IsType<LocalVocabulary>(Parallelize.ApplyVocabParallel(model, groups.Vocab));
        Assert.Empty(model.ShardedNames);
        Assert.Null(Parallelize.ApplyDataParallel(model, groups, overlap: true));
        Assert.Null(model.BoundaryReached);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ApplyVocabParallel_keeps_the_shards_rows_of_the_whole_models_initialisation_in_the_same_parameter_order(bool tying)
    {
        const int tp = 4;
        var options = new ModelOptions { WeightTying = tying };
        using var whole = new Gpt(options, 512, maxSequenceLength: 16, seed: 7);
        for (int r = 0; r < tp; r++)
        {
            using var model = new Gpt(options, 512, maxSequenceLength: 16, seed: 7);
            var names = model.named_parameters().Select(n => n.name).ToList();

            var shard = Assert.IsType<ShardedVocabulary>(Parallelize.ApplyVocabParallel(model, new ShardedVocabularyTests.GroupOf(r, tp)));

            Assert.Equal(names, model.named_parameters().Select(n => n.name));
            Assert.Equal(tying ? ["wte.weight"] : ["lm_head", "wte.weight"], model.ShardedNames.Order());
            Assert.Equal((r * 512L / tp, 512L / tp), (shard.Offset, shard.Rows));
            var parameters = model.named_parameters().ToDictionary(n => n.name, n => n.parameter);
            foreach (var (name, p) in whole.named_parameters())
            {
                using var expected = model.ShardedNames.Contains(name) ? p.narrow(0, shard.Offset, shard.Rows) : p.alias();
                Assert.Equal(Tensors.Values(expected), Tensors.Values(parameters[name]));
            }
        }
    }

    [Theory]
    [InlineData("tcp", Backend.Tcp)]
    [InlineData("nccl", Backend.Nccl)]
    [InlineData("NCCL", Backend.Nccl)]
    public void Communicators_parse_the_backend_the_coordinator_names(string name, Backend expected) =>
        Assert.Equal(expected, Communicators.Parse(name));

    [Fact]
    public void Every_backend_reads_back_from_the_name_the_coordinator_sends() =>
        Assert.All(Enum.GetValues<Backend>(), b => Assert.Equal(b, Communicators.Parse(b.ToString().ToLowerInvariant())));

    [Fact]
    public void An_unknown_backend_is_refused_naming_it()
    {
        var e = Assert.Throws<ArgumentException>(() => Communicators.Parse("mpi"));

        Assert.Contains("'mpi'", e.Message);
    }
}
