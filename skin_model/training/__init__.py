"""Training: the stages' checkpoints, callbacks, losses and schedules (``stages``), tf.distribute strategies
(``distribute``), MixStyle (``mixstyle``) and carrying an unfinished run to another machine (``parking``).
Used by train.py; serving never imports it."""
