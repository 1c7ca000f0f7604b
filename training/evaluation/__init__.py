"""Evaluation metrics: ``coco`` (box mAP, chunked), ``voc`` (07 / area mAP), ``citypersons`` (MR^-2),
``segmentation`` (confusion-matrix mIoU); gathering across ranks is ``training.distributed``'s. Import the module you
need."""
