// oec-rank: train a GPT with output embedding centering in this process, prepare token shards, or benchmark.
using Rank;

return Cli.Build().Parse(args).Invoke();
