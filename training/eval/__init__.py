"""Learned evaluation metrics for generators (R-precision with DAMSM encoders).

The shapes dataset's exact answer key lives with the data (:func:`training.data.shapes.check_image`)
and DF-GAN's use of it in :mod:`training.dfgan.evaluate`.
"""
