"""Model workers as supervised subprocesses ("model containers").

protocol     framing and messages on the gateway <-> worker socket
textstream   incremental detokenisation and stop strings (pure)
sampling     next-token choice: greedy, temperature, top-p, seeds
modeldir     refusing unsafe model directories (safetensors only)
model        loading a local causal LM and streaming a generation
demo_model   a tiny random Llama built locally, for tests and demos
isolation    the isolation layers (netns, Landlock, seccomp, rlimits, cgroup, uid drop)
worker       the worker process (``python -m sandbox.worker``)
process      spawning and reaping one worker subprocess
spawner      the fork server client (``workers.spawner: fork_server``): fast worker starts
forkserver   the fork server process; forkchild its child becoming a worker; forkproto the wire
client       ModelWorker: supervision, restarts, admission, streaming
"""
