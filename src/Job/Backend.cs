// The collectives backend of a job (job.backend).
namespace Job;

public enum Backend
{
    /// <summary>A ring over TCP between the ranks' processes: CPU tensors, and CUDA tensors through host memory (ranks
    /// may share a GPU).</summary>
    Tcp,
    /// <summary>NCCL on the ranks' GPUs, on the current CUDA stream: CUDA tensors.</summary>
    Nccl,
}
