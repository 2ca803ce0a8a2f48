"""Training engines: what runs the step under the shared loop (``liquid_train.training.trainer``).

``megatron`` (default): the project's megatron-core GPTModel (TP/PP/DP, distributed optimizer, FP8 with TE),
``liquid_train.training.train_module.TrainModule``. ``deepspeed``: the Hugging Face model itself under DeepSpeed ZeRO
stage 1/2/3 (+ CPU offload), :class:`liquid_train.training.deepspeed_module.DeepSpeedTrainModule`; the public Liquid
recipe's engine, and an independent oracle for the megatron one (same batches, same loss, same schedule).
"""
ENGINES = ("megatron", "deepspeed")
