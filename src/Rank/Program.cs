// oecrun: launch a training job (coordinator and ranks), run one rank or the coordinator alone, prepare shards, plot metrics, benchmark.
using Rank;

return Cli.Build().Parse(args).Invoke();
