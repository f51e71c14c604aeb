// FailureClassifier: which failures a restart cannot cure (configuration, resources) and which follow from a lost peer.
using Collectives;
using Data;
using Job;
using Rank.Distributed;

namespace Rank.UnitTests;

public sealed class FailureClassifierTests
{
    public static TheoryData<Exception, FailureClass> Failures => new()
    {
        { new IOException("No space left on device : '/run/checkpoints/step_000010/rank1.pt'", 28), FailureClass.Resource },
        { new IOException("Disk quota exceeded : '/run/metrics.jsonl'", 122), FailureClass.Resource },
        { new OutOfMemoryException(), FailureClass.Resource },
        { new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 20.00 GiB"), FailureClass.Resource },
        { new InvalidOperationException("[enforce fail at alloc_cpu.cpp:116] . DefaultCPUAllocator: not enough memory: you tried to allocate 4000000000000 bytes."), FailureClass.Resource },
        { new CollectiveException("group 'job/g1': rank 1 failed", new IOException("No space left on device : '/x'", 28)), FailureClass.Resource },
        { new ArgumentException("model.d_model = 1000000000: too large"), FailureClass.Configuration },
        { new DataFormatException("data/a.bin: token id 60000 at position 3 is >= vocabSize 50257"), FailureClass.Configuration },
        { new BackendUnavailableException("the NCCL backend cannot start: libnccl.so.2 was not found"), FailureClass.Configuration },
        { new CollectiveException("group 'job/g1': rank 1 (127.0.0.1:4000) failed: rank 1 closed the connection"), FailureClass.PeerLost },
        { new AggregateException(new CollectiveException("rank 0 reset the connection")), FailureClass.PeerLost },
        { new IOException("Input/output error", 5), FailureClass.Other },
        { new InvalidOperationException("the coordinator sent learning_rate_scale = 0"), FailureClass.Other },
    };

    [Theory]
    [MemberData(nameof(Failures))]
    public void A_failure_is_classified_by_its_cause(Exception failure, FailureClass expected) =>
        Assert.Equal(expected, FailureClassifier.Classify(failure));
}
