"""The physical model of the box: step time from the hardware and the model, power on top of it.

:mod:`tuning.model.step` holds the shared :class:`~tuning.model.step.StepTime` contract.
"""
