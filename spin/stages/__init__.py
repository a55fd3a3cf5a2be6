"""The stages of the SPIN chain, one module each, as functions of a job's :class:`Context`
(context.py: settings, artifact store, tracker, splits, the model in memory): the start model
and the optional SFT stage (start), the pairs of an iteration, generated or given
(generation), their reference log-probabilities (reference) and whose play they are
(opponents), training a model on them (training), and scoring a model (scoring); loading.py
and prompts.py hold how they load models and format prompts. spin/chain.py strings them
together as the paper's Algorithm 1; spin/baselines.py builds the paper's comparisons."""
