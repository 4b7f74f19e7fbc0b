"""The experiment config. Light on purpose (ml_collections and the data catalog only), so
that config files load before jax: ``defaults`` (every field, with a comment each),
``recipes`` (the benchmarks' configs and their smoke variants), ``validate`` (the checks
run before anything compiles), ``overrides`` (fields set on the command line or in a
notebook) and ``replicas`` (several seeds or taus in one run)."""

from lgla_jax.config.defaults import DTYPES, base_config
from lgla_jax.config.recipes import (cifar_200_epoch_recipe, cifar_lt_config, large_lt_config,
                                     refuse_unknown_argument, shrink_own_data_to_quick,
                                     shrink_to_quick)

__all__ = ["DTYPES", "base_config", "cifar_200_epoch_recipe", "cifar_lt_config",
           "large_lt_config", "refuse_unknown_argument", "shrink_own_data_to_quick", "shrink_to_quick"]
