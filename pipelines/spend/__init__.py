"""The second reference workload: a customer's spend over the next 7 days.

It shares the raw transactions and the Feast repo with the fraud workload and
nothing model-specific: its own feature service (``customer_spend_v1``), entity
(the customer), request fields (``customer_id``, ``as_of``), flavor (scikit-learn)
and prediction (an amount). It is trained by :mod:`pipelines.spend.train`, served and
canaried by the same platform code as the fraud model, with none of its own.
"""
