"""Evaluation metrics: ``coco`` (box mAP, chunked), ``voc`` (07 / area mAP), ``citypersons`` (MR^-2),
``segmentation`` (confusion-matrix mIoU), ``distributed`` (gathering across ranks). Import the module you need."""
