variable "bucket_name" {
  type        = string
  description = "Name of the bucket."
}

variable "raw_expiration_days" {
  type        = number
  description = "Days after which objects under raw/ (and their old versions) expire."
}
